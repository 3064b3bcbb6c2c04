# ABAC: decisions from attributes of the caller and the resource, not from roles.
package abac

import rego.v1

# The owner of a profile may read and update it: /api/profiles/<sub>[/...]
owner_access if {
	input.parsed_path[0] == "api"
	input.parsed_path[1] == "profiles"
	input.parsed_path[2] == input.identity.sub
	input.attributes.request.http.method in {"GET", "PUT", "PATCH"}
}

# Tenant isolation: /api/tenants/<tenant>/... only for identities of that tenant, read-only
# unless the caller also has the tenant-admin role.
tenant_access if {
	input.parsed_path[0] == "api"
	input.parsed_path[1] == "tenants"
	input.identity.tenant != null
	input.parsed_path[2] == input.identity.tenant
	tenant_method_allowed
}

tenant_method_allowed if input.attributes.request.http.method in {"GET", "HEAD"}

tenant_method_allowed if "tenant-admin" in input.identity.roles

allow if owner_access

allow if tenant_access
