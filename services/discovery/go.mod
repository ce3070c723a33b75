module github.com/sollol/mesh/services/discovery

go 1.26
