package llamaservertest

import "syscall"

// sysProcAttr puts the server in its own process group and has the kernel kill it should the
// test process die without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
