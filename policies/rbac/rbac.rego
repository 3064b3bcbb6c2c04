# RBAC: a caller's groups and roles grant methods on path globs (permissions live in data.json).
package rbac

import rego.v1

request_path := split(input.attributes.request.http.path, "?")[0]

principals := array.concat(object.get(input, ["identity", "groups"], []), object.get(input, ["identity", "roles"], []))

grants contains grant if {
	some principal in principals
	some grant in data.rbac.permissions[principal]
}

allow if {
	some grant in grants
	input.attributes.request.http.method in grant.methods
	glob.match(grant.path, ["/"], request_path)
}
