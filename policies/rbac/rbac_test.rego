package rbac_test

import rego.v1

import data.rbac

req(method, path, groups) := {
	"attributes": {"request": {"http": {"method": method, "path": path}}},
	"identity": {"sub": "u", "groups": groups, "roles": []},
}

test_finance_reads_invoices if {
	rbac.allow with input as req("GET", "/api/invoices/1", ["finance"])
}

test_finance_creates_invoices if {
	rbac.allow with input as req("POST", "/api/invoices/", ["finance"])
}

test_query_string_ignored if {
	rbac.allow with input as req("GET", "/api/invoices/7?expand=lines", ["finance"])
}

test_auditors_cannot_write if {
	not allow_for("POST", "/api/invoices/1", ["auditors"])
}

test_sales_denied if {
	not allow_for("GET", "/api/invoices/1", ["sales"])
}

test_no_groups_denied if {
	not allow_for("GET", "/api/invoices/1", [])
}

test_glob_does_not_cross_prefix if {
	not allow_for("GET", "/api/invoices-archive/1", ["finance"])
}

allow_for(method, path, groups) if {
	rbac.allow with input as req(method, path, groups)
}
