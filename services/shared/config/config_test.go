package config_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sollol/mesh/services/shared/config"
)

type sample struct {
	Addr      string            `yaml:"addr"`
	Timeout   time.Duration     `yaml:"timeout"`
	Endpoints config.StringList `yaml:"endpoints"`
}

func (s *sample) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.Addr, "svc.addr", "127.0.0.1:1", "address")
	fs.DurationVar(&s.Timeout, "svc.timeout", time.Second, "timeout")
	s.Endpoints = config.StringList{"127.0.0.1:2379"}
	fs.Var(&s.Endpoints, "etcd-endpoints", "endpoints")
}

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func writeFile(t *testing.T, body string) string {
	path := filepath.Join(t.TempDir(), "sollol.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func TestPrecedenceDefaultsFileEnvFlags(t *testing.T) {
	file := writeFile(t, "addr: 10.0.0.1:5\ntimeout: 7s\nendpoints: [a:1, b:2]\n")

	var onlyDefaults sample
	require.NoError(t, config.Load(flag.NewFlagSet("t", flag.ContinueOnError), &onlyDefaults, nil, env(nil)))
	require.Equal(t, sample{Addr: "127.0.0.1:1", Timeout: time.Second, Endpoints: config.StringList{"127.0.0.1:2379"}}, onlyDefaults)

	var fromFile sample
	require.NoError(t, config.Load(flag.NewFlagSet("t", flag.ContinueOnError), &fromFile, []string{"--config.file", file}, env(nil)))
	require.Equal(t, sample{Addr: "10.0.0.1:5", Timeout: 7 * time.Second, Endpoints: config.StringList{"a:1", "b:2"}}, fromFile)

	var envOverFile sample
	require.NoError(t, config.Load(flag.NewFlagSet("t", flag.ContinueOnError), &envOverFile, nil,
		env(map[string]string{"SOLLOL_CONFIG_FILE": file, "SOLLOL_SVC_TIMEOUT": "9s"})))
	require.Equal(t, 9*time.Second, envOverFile.Timeout)
	require.Equal(t, "10.0.0.1:5", envOverFile.Addr)

	var flagOverEnv sample
	require.NoError(t, config.Load(flag.NewFlagSet("t", flag.ContinueOnError), &flagOverEnv,
		[]string{"--config.file=" + file, "--svc.timeout=11s", "--etcd-endpoints", "x:1,y:2"},
		env(map[string]string{"SOLLOL_SVC_TIMEOUT": "9s"})))
	require.Equal(t, 11*time.Second, flagOverEnv.Timeout)
	require.Equal(t, config.StringList{"x:1", "y:2"}, flagOverEnv.Endpoints)
}

func TestErrorsNameTheCulprit(t *testing.T) {
	var s sample
	err := config.Load(flag.NewFlagSet("t", flag.ContinueOnError), &s, []string{"--no-such-flag"}, env(nil))
	require.ErrorContains(t, err, "no-such-flag")

	err = config.Load(flag.NewFlagSet("t", flag.ContinueOnError), &s, nil, env(map[string]string{"SOLLOL_SVC_TIMEOUT": "soon"}))
	require.ErrorContains(t, err, "SOLLOL_SVC_TIMEOUT")

	err = config.Load(flag.NewFlagSet("t", flag.ContinueOnError), &s, []string{"--config.file", writeFile(t, "adress: x\n")}, env(nil))
	require.ErrorContains(t, err, "adress")

	err = config.Load(flag.NewFlagSet("t", flag.ContinueOnError), &s, []string{"--config.file", "/nonexistent/sollol.yaml"}, env(nil))
	require.ErrorContains(t, err, "/nonexistent/sollol.yaml")
}
