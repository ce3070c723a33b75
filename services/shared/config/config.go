// Package config loads a process's configuration in one order for every service:
// defaults < YAML file < SOLLOL_* environment < command-line flags.
//
// Each configuration struct registers its own flags with a prefix (Loki's RegisterFlags
// pattern); the flag's name also gives the environment variable: "router.grpc-addr" is read
// from SOLLOL_ROUTER_GRPC_ADDR.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable the mesh reads.
const EnvPrefix = "SOLLOL_"

// FileFlag names the YAML configuration file.
const FileFlag = "config.file"

// Registerer is a configuration struct that can declare its flags.
type Registerer interface {
	RegisterFlags(fs *flag.FlagSet)
}

// EnvName is the environment variable that sets the flag called name.
func EnvName(name string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return EnvPrefix + strings.ToUpper(r.Replace(name))
}

// Load fills cfg from its defaults, the YAML file named by --config.file (or
// SOLLOL_CONFIG_FILE), the environment and args, in that order of precedence. fs must be
// fresh; Load registers cfg's flags on it. Errors name the flag, variable or key at fault.
func Load(fs *flag.FlagSet, cfg Registerer, args []string, lookupEnv func(string) (string, bool)) error {
	fs.SetOutput(io.Discard)
	cfg.RegisterFlags(fs)
	fs.String(FileFlag, "", "YAML configuration file (env "+EnvName(FileFlag)+")")

	path := fileFromArgs(args)
	if path == "" {
		path, _ = lookupEnv(EnvName(FileFlag))
	}
	if path != "" {
		if err := loadYAML(path, cfg); err != nil {
			return err
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	setOnCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setOnCommandLine[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if setOnCommandLine[f.Name] || f.Name == FileFlag {
			return
		}
		if v, ok := lookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment %s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// fileFromArgs finds --config.file before the full parse, because the file's values must
// land before the flags that override them.
func fileFromArgs(args []string) string {
	for i, a := range args {
		name := strings.TrimLeft(a, "-")
		if a == "--" {
			break
		}
		if v, ok := strings.CutPrefix(name, FileFlag+"="); ok {
			return v
		}
		if name == FileFlag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func loadYAML(path string, cfg any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	// A misspelt key must be an error, not a silently ignored setting.
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// Print writes the effective configuration as YAML (what --print-config shows).
func Print(w io.Writer, cfg any) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return err
	}
	return enc.Close()
}

// StringList is a flag holding a comma-separated list; in YAML it is a sequence.
type StringList []string

// String implements flag.Value.
func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value; it replaces the list, so a flag overrides the file entirely.
func (l *StringList) Set(v string) error {
	*l = nil
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}
