module github.com/b24go/b24oauth/pgstore

go 1.23.0

require (
	github.com/b24go/b24oauth v0.1.0
	github.com/jackc/pgx/v5 v5.7.6
)

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.2 // indirect
	golang.org/x/crypto v0.37.0 // indirect
	golang.org/x/oauth2 v0.30.0 // indirect
	golang.org/x/sync v0.16.0 // indirect
	golang.org/x/text v0.24.0 // indirect
	golang.org/x/time v0.12.0 // indirect
)
