package llamaproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ProcRecord identifies one started llama-server beyond doubt: a pid alone is reused, but pid,
// start time and command line together are one process.
type ProcRecord struct {
	Model      string   `json:"model"`
	PID        int      `json:"pid"`
	StartTicks uint64   `json:"start_ticks"`
	Argv       []string `json:"argv"`
}

// State is what a manager run records on disk.
type State struct {
	// Instance is the manager replica's id in etcd records.
	Instance string `json:"instance"`
	// SessionLease is the etcd lease its ownership locks live under (0: none yet).
	SessionLease int64 `json:"session_lease"`
	// Processes are the llama-servers it runs now.
	Processes []ProcRecord `json:"processes"`
}

// StateFile is a manager's record of its processes, in its data folder. One manager at a time
// holds it (an advisory lock held while it runs), so two managers never share a folder.
type StateFile struct {
	path string
	lock *os.File

	mu    sync.Mutex
	state State
}

// OpenState takes dir's state file, failing when another live manager holds it, and returns
// the state its previous holder left (zero when none).
func OpenState(dir string) (*StateFile, State, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, State{}, fmt.Errorf("coordinator data folder %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "coordinator.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, State{}, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(lock.Name())
		lock.Close()
		return nil, State{}, fmt.Errorf("coordinator data folder %s is in use by another coordinator-manager (pid %s); give each its own folder",
			dir, string(holder))
	}
	_ = lock.Truncate(0)
	_, _ = lock.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)
	sf := &StateFile{path: filepath.Join(dir, "coordinator-state.json"), lock: lock}
	var prev State
	data, err := os.ReadFile(sf.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		sf.Close()
		return nil, State{}, err
	default:
		if err := json.Unmarshal(data, &prev); err != nil {
			// A torn or foreign file proves nothing about any process: start afresh.
			prev = State{}
		}
	}
	return sf, prev, nil
}

// Close releases the lock; the file stays for the next run.
func (s *StateFile) Close() {
	if s.lock != nil {
		_ = s.lock.Close()
		s.lock = nil
	}
}

// Update changes the state and writes it atomically.
func (s *StateFile) Update(f func(*State)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.state)
	data, err := json.MarshalIndent(s.state, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

// AddProcess records a started process.
func (s *StateFile) AddProcess(r ProcRecord) error {
	return s.Update(func(st *State) { st.Processes = append(st.Processes, r) })
}

// RemoveProcess forgets a process that has exited.
func (s *StateFile) RemoveProcess(pid int) error {
	return s.Update(func(st *State) {
		st.Processes = slices.DeleteFunc(st.Processes, func(r ProcRecord) bool { return r.PID == pid })
	})
}

// Owned reports whether r still names a live process that is provably the one recorded: the
// same start time and the same command line. Anything else is left alone.
func Owned(r ProcRecord) bool {
	if r.PID <= 0 || !alive(r.PID) {
		return false
	}
	ticks, err := startTicks(r.PID)
	if err != nil || ticks != r.StartTicks {
		return false
	}
	argv, err := cmdline(r.PID)
	return err == nil && slices.Equal(argv, r.Argv)
}

// ReapStale stops the processes of a previous run that are provably its own (their whole
// process groups), and reports how many it stopped. It never signals a process it cannot
// identify.
func ReapStale(prev State, timeout time.Duration, log *slog.Logger) int {
	n := 0
	for _, r := range prev.Processes {
		if !Owned(r) {
			if alive(r.PID) {
				log.Info("a recorded pid now belongs to another process; left alone", "pid", r.PID, "model", r.Model)
			}
			continue
		}
		log.Warn("stopping a llama-server left by a previous run", "pid", r.PID, "model", r.Model)
		target := r.PID
		if f, err := procStat(r.PID); err == nil && string(f[2]) == strconv.Itoa(r.PID) {
			target = -r.PID // its own group, as started: stop what it started too
		}
		_ = syscall.Kill(target, syscall.SIGTERM)
		deadline := time.Now().Add(timeout)
		for Owned(r) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		for i := 0; i < 500 && (Owned(r) || (target < 0 && len(groupMembers(r.PID)) > 0)); i++ {
			_ = syscall.Kill(target, syscall.SIGKILL)
			time.Sleep(20 * time.Millisecond)
		}
		n++
	}
	return n
}
