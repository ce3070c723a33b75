//go:build !linux

package llamaproc

import (
	"errors"
	"syscall"
)

var errNoProc = errors.New("llamaproc: /proc is needed to identify processes")

func sysProcAttr(bool) *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func startTicks(int) (uint64, error) { return 0, errNoProc }
func cmdline(int) ([]string, error)  { return nil, errNoProc }
func groupMembers(int) []int         { return nil }
func alive(pid int) bool             { return syscall.Kill(pid, 0) == nil }

func procStat(int) ([][]byte, error) { return nil, errNoProc }
