package rpcservertest

import "syscall"

// sysProcAttr has the kernel kill the server should the test process die without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
