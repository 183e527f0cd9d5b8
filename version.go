package b24oauth

// Version is the release this code is, or is about to become: the core's git tag is "v" +
// Version, every other module of the repository (pgstore, redisstore...) is tagged
// "<dir>/v" + Version on the same commit, and each of them requires the core at that version.
// It is the one place the version is written down; RELEASING.md says how to change it.
const Version = "0.1.0"

// APIVersion names a Bitrix24 REST API generation.
type APIVersion string

// The REST API versions a client can call.
const (
	APIVersionV2 APIVersion = "v2" // classic REST: <client_endpoint><method>
	APIVersionV3 APIVersion = "v3" // REST 3.0: https://<domain>/rest/api/<method>
)
