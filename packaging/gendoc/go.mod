module github.com/brokerd/brokerd/packaging/gendoc

go 1.26.0
