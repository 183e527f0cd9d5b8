module github.com/b24go/b24oauth/internal/modproxy

go 1.23.0

require golang.org/x/mod v0.27.0
