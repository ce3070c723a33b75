module github.com/sollol/mesh/services/ollamapool

go 1.26
