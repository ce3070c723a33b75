// Package logging builds the process's slog logger from configuration.
package logging

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Config selects the log level and format.
type Config struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text (for people) or json (for collectors).
	Format string `yaml:"format"`
}

// RegisterFlags declares the logging flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Level, "log.level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.Format, "log.format", "text", "log format: text or json")
}

// New returns a logger writing to w.
func New(cfg Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %q is not debug, info, warn or error", cfg.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.Format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log.format: %q is not text or json", cfg.Format)
	}
}
