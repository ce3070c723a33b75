package coordinator_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// llamaProcesses lists the live llama-server processes started from bin for model.
func (w *world) llamaProcesses(model string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if argv[0] != w.bin || !slices.Contains(argv, w.models[model]) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
			if len(f) > 0 && (f[0] == "Z" || f[0] == "X") {
				continue
			}
		}
		var pid int
		_, _ = fmt.Sscan(e.Name(), &pid)
		out = append(out, pid)
	}
	return out
}
