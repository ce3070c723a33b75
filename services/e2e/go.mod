module github.com/sollol/mesh/services/e2e

go 1.26
