"""SAML 2.0 Web Browser SSO for the proxy as a service provider (pysaml2 + xmlsec1).

Specifications: SAML 2.0 Core, Bindings (HTTP-Redirect, HTTP-POST) and Profiles (Web Browser SSO,
Single Logout), https://docs.oasis-open.org/security/saml/v2.0/ .

Modules: `sp` (pysaml2 with safe defaults and the checks it lacks), `xmlguard` (DTDs, comments and
signature wrapping refused before pysaml2 parses), `redirect_binding` (query signatures),
`metadata` (IdP metadata in, SP metadata out), `replay` (consumed assertion IDs), `presets`
(attribute mapping per IdP, as data), `config` (pysaml2's configuration), `attributes` (the
Identity), `authenticator` (the session a login leaves). The /.iam/saml/ endpoints and their wiring
are front doors: portal/saml.py and portal/saml_runtime.py.
"""
