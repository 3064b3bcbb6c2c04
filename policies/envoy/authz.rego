# An opa-envoy-plugin policy, unchanged: it reads the Envoy-shaped input only.
package envoy.authz

import rego.v1

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "envoy"
	input.parsed_path[1] == "status"
}

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path = ["envoy", "people", name]
	claims.sub == name
}

claims := payload if {
	[_, encoded] := split(input.attributes.request.http.headers.authorization, " ")
	[_, payload, _] := io.jwt.decode(encoded)
}
