package iam.authz_test

import rego.v1

import data.iam.authz

req(method, path, groups, labels) := {
	"attributes": {"request": {"http": {"method": method, "path": path}}},
	"parsed_path": array.slice(split(path, "/"), 1, 10),
	"identity": {"sub": "alice", "groups": groups, "roles": []},
	"route": {"id": "r", "labels": labels},
}

test_public_route_allowed if {
	d := authz.decision with input as req("GET", "/public/hello", [], {"access": "public"})
	d.allowed == true
}

test_finance_allowed if {
	d := authz.decision with input as req("GET", "/api/invoices/1", ["finance"], {})
	d.allowed == true
	d.reasons == ["granted by role or group"]
}

test_denial_explains if {
	d := authz.decision with input as req("GET", "/api/invoices/1", ["sales"], {})
	d.allowed == false
	d.reasons == ["user alice may not GET /api/invoices/1"]
}

test_owner_allowed if {
	d := authz.decision with input as req("GET", "/api/profiles/alice", [], {})
	d.allowed == true
	d.reasons == ["caller owns the resource"]
}
