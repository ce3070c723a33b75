// Command sollol runs the SOLLOL mesh: `sollol up` runs every service plus an embedded etcd in
// one process; `sollol <target>` runs one service, as a container does.
package main

import (
	"os"

	"github.com/sollol/mesh/services/sollol/internal/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
}
