package b24oauth

import "context"

// StageFileStoreWrite writes inst to its member's temporary file exactly as a FileStore write
// does, holding the member's lock, and stops there: what a crash between the write's fsync and
// its rename leaves behind.
func StageFileStoreWrite(s *FileStore, inst Installation) (path string, err error) {
	unlock, err := s.lock(context.Background(), inst.MemberID)
	if err != nil {
		return "", err
	}
	defer unlock(false)
	return s.stage(inst)
}

// FileStoreTempPath returns the path of memberID's temporary file in s.
func FileStoreTempPath(s *FileStore, memberID string) string { return s.tempPath(memberID) }
