package llamaproc

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// sysProcAttr gives the process its own group (so it and anything it starts stop together)
// and, optionally, the parent-death signal.
func sysProcAttr(killWithManager bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if killWithManager {
		a.Pdeathsig = syscall.SIGKILL
	}
	return a
}

// procStat returns the fields of /proc/<pid>/stat after the command name: state is [0], the
// process group [2] and the start time in clock ticks [19].
func procStat(pid int) ([][]byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	// pid (comm) state ppid pgrp ...; comm may contain spaces and ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, os.ErrInvalid
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return nil, os.ErrInvalid
	}
	return f, nil
}

// startTicks is when pid started, in clock ticks since boot: with the pid it identifies one
// process for ever, as a pid alone is reused.
func startTicks(pid int) (uint64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(string(f[19]), 10, 64)
}

// cmdline returns pid's argument vector.
func cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte{0})
	var out []string
	for _, a := range bytes.Split(b, []byte{0}) {
		out = append(out, string(a))
	}
	return out, nil
}

// groupMembers lists the live (non-zombie) processes of process group pgid.
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStat(pid)
		if err != nil || string(f[0]) == "Z" || string(f[0]) == "X" {
			continue
		}
		if pg, err := strconv.Atoi(string(f[2])); err == nil && pg == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid is a live, non-zombie process.
func alive(pid int) bool {
	f, err := procStat(pid)
	return err == nil && string(f[0]) != "Z" && string(f[0]) != "X"
}
