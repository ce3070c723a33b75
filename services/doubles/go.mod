module github.com/sollol/mesh/services/doubles

go 1.26

replace github.com/sollol/mesh/services/shared => ../shared
