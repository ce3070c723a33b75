module github.com/sollol/mesh/services/sollol

go 1.26
