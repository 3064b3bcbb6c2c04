package abac_test

import rego.v1

import data.abac

req(method, parsed, identity) := {
	"attributes": {"request": {"http": {"method": method}}},
	"parsed_path": parsed,
	"identity": identity,
}

alice := {"sub": "alice", "tenant": "acme", "roles": []}

test_owner_reads_own_profile if {
	abac.allow with input as req("GET", ["api", "profiles", "alice"], alice)
}

test_owner_cannot_delete_profile if {
	not allowed("DELETE", ["api", "profiles", "alice"], alice)
}

test_other_profile_denied if {
	not allowed("GET", ["api", "profiles", "bob"], alice)
}

test_tenant_read if {
	abac.allow with input as req("GET", ["api", "tenants", "acme", "orders"], alice)
}

test_tenant_write_needs_role if {
	not allowed("POST", ["api", "tenants", "acme", "orders"], alice)
}

test_tenant_admin_writes if {
	abac.allow with input as req("POST", ["api", "tenants", "acme", "orders"], {"sub": "alice", "tenant": "acme", "roles": ["tenant-admin"]})
}

test_other_tenant_denied if {
	not allowed("GET", ["api", "tenants", "globex", "orders"], alice)
}

allowed(method, parsed, identity) if {
	abac.allow with input as req(method, parsed, identity)
}
