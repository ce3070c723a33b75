module github.com/sollol/mesh/services/coordinator

go 1.26
