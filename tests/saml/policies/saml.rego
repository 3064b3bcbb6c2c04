package saml.authz

import rego.v1

default decision := {"allowed": false, "reasons": ["only SAML users"]}

decision := {"allowed": true} if input.identity.method == "saml"

allow_public := true
