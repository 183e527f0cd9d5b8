package pgstore

// SetListPage sets how many member_ids one List query reads, so that a test crosses many pages.
func (s *Store) SetListPage(n int) { s.listPage = n }

// Table returns the table's name, quoted as the Store splices it into SQL.
func (s *Store) Table() string { return s.table }
