module github.com/sollol/mesh/services/router

go 1.26
