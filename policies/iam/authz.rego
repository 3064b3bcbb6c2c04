# The quick start's decision: public routes, then RBAC, then ABAC; a denial says why.
package iam.authz

import rego.v1

import data.abac
import data.rbac

method := input.attributes.request.http.method

path := split(input.attributes.request.http.path, "?")[0]

# (sprintf rather than concat: the embedded engine renders concat's result with stray quotes)
who := sprintf("user %s", [input.identity.sub])

decision := {"allowed": true, "reasons": ["public route"]} if {
	input.route.labels.access == "public"
} else := {"allowed": true, "reasons": ["granted by role or group"]} if {
	rbac.allow
} else := {"allowed": true, "reasons": ["caller owns the resource"]} if {
	abac.allow
} else := {"allowed": false, "reasons": [sprintf("%s may not %s %s", [who, method, path])]}
