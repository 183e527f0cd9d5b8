package b24oauth

// APIVersion names a Bitrix24 REST API generation.
type APIVersion string

// The REST API versions a client can call.
const (
	APIVersionV2 APIVersion = "v2" // classic REST: <client_endpoint><method>
	APIVersionV3 APIVersion = "v3" // REST 3.0: https://<domain>/rest/api/<method>
)
