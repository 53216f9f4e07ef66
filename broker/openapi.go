package broker

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the reference broker's OpenAPI document corrected to what
// its code does (ES, automatic algorithm, tls_version, certificate) plus
// brokerd's additions (/keys, error answers).
//
//go:embed openapi.json
var openAPIDoc []byte

func (a *API) openapi(w http.ResponseWriter, _ *http.Request) {
	writeRaw(w, http.StatusOK, openAPIDoc)
}
