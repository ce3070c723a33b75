// Package gen holds the code generated from proto/ (under go/) and the OpenAPI document of the
// public REST API (under openapiv2/). This file is the one hand-written piece: it embeds the
// OpenAPI document so the router can serve it.
package gen

import _ "embed"

// RouterOpenAPI is the OpenAPI v2 document of sollol.router.v1.RouterService's REST mapping.
//
//go:embed openapiv2/sollol/router/v1/router_service.swagger.json
var RouterOpenAPI []byte
