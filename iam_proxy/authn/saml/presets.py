"""Where each Identity field comes from in a SAML assertion, per identity provider, as data.

Each list names SAML attributes by their `Name` or `FriendlyName`; the first attribute present
wins for single values (username, email, name, tenant), and every listed attribute is collected
for groups and roles. `sub` is the NameID unless `sub` names attributes.
"""

from __future__ import annotations

from ...settings.saml import SAMLAttributeMapping

_MS_CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
_MS_2008 = "http://schemas.microsoft.com/ws/2008/06/identity/claims/"
_MS_IDENTITY = "http://schemas.microsoft.com/identity/claims/"

# X.500 / eduPerson OIDs (urn:oid form, as Shibboleth and most R&E IdPs send them)
_UID = "urn:oid:0.9.2342.19200300.100.1.1"
_MAIL = "urn:oid:0.9.2342.19200300.100.1.3"
_DISPLAY_NAME = "urn:oid:2.16.840.1.113730.3.1.241"
_CN = "urn:oid:2.5.4.3"
_EPPN = "urn:oid:1.3.6.1.4.1.5923.1.1.1.6"
_AFFILIATION = "urn:oid:1.3.6.1.4.1.5923.1.1.1.1"
_SCOPED_AFFILIATION = "urn:oid:1.3.6.1.4.1.5923.1.1.1.9"
_ENTITLEMENT = "urn:oid:1.3.6.1.4.1.5923.1.1.1.7"
_IS_MEMBER_OF = "urn:oid:1.3.6.1.4.1.5923.1.5.1.1"
_SCHAC_HOME_ORG = "urn:oid:1.3.6.1.4.1.25178.1.2.9"
_PKCS9_EMAIL = "urn:oid:1.2.840.113549.1.9.1"

PRESETS: dict[str, SAMLAttributeMapping] = {
    "generic": SAMLAttributeMapping(
        username=["username", "uid", "preferred_username", _UID],
        email=["email", "mail", "emailAddress", _MAIL, _PKCS9_EMAIL],
        name=["displayName", "name", "cn", _DISPLAY_NAME, _CN],
        groups=["groups", "memberOf", "isMemberOf"],
        roles=["roles", "Role", "role"],
    ),
    # Keycloak: the client's protocol mappers decide names; these are the built-in mapper defaults
    # (User Property "username"/"email", "X500 email", "Role list" as "Role", "Group list" as "groups").
    "keycloak": SAMLAttributeMapping(
        username=["username", _UID],
        email=["email", _PKCS9_EMAIL, _MAIL],
        name=["displayName", "fullName"],
        groups=["groups", "member"],
        roles=["Role", "roles"],
    ),
    # Entra ID (Azure AD) enterprise application defaults: claim URIs.
    "entra": SAMLAttributeMapping(
        username=[_MS_CLAIMS + "name", _MS_CLAIMS + "upn"],
        email=[_MS_CLAIMS + "emailaddress"],
        name=[_MS_IDENTITY + "displayname"],
        groups=[_MS_2008 + "groups"],
        roles=[_MS_2008 + "role"],
        tenant=[_MS_IDENTITY + "tenantid"],
        attributes={"object_id": _MS_IDENTITY + "objectidentifier",
                    "identity_provider": _MS_IDENTITY + "identityprovider"},
    ),
    # AD FS claim rules ("Send LDAP Attributes as Claims") emit the same URI families.
    "adfs": SAMLAttributeMapping(
        username=[_MS_CLAIMS + "upn", _MS_2008 + "windowsaccountname", _MS_CLAIMS + "name"],
        email=[_MS_CLAIMS + "emailaddress"],
        name=[_MS_CLAIMS + "name", _MS_CLAIMS + "givenname"],
        groups=[_MS_2008 + "groups", _MS_CLAIMS + "Group", "http://schemas.xmlsoap.org/claims/Group"],
        roles=[_MS_2008 + "role"],
    ),
    # Okta: attribute statements are defined per app; these are the names Okta's docs use.
    "okta": SAMLAttributeMapping(
        username=["username", "login"],
        email=["email"],
        name=["displayName", "name"],
        groups=["groups"],
        roles=["roles"],
    ),
    # Shibboleth IdP and R&E federations: eduPerson and SCHAC attributes in urn:oid form.
    "shibboleth": SAMLAttributeMapping(
        username=[_EPPN, "eduPersonPrincipalName", _UID, "uid"],
        email=[_MAIL, "mail"],
        name=[_DISPLAY_NAME, "displayName", _CN, "cn"],
        groups=[_IS_MEMBER_OF, "isMemberOf", _SCOPED_AFFILIATION, "eduPersonScopedAffiliation",
                _AFFILIATION, "eduPersonAffiliation"],
        roles=[_ENTITLEMENT, "eduPersonEntitlement"],
        tenant=[_SCHAC_HOME_ORG, "schacHomeOrganization"],
    ),
}


def mapping_for(preset: str, override: SAMLAttributeMapping | None) -> SAMLAttributeMapping:
    """The preset, with every list the override sets replacing the preset's."""
    base = PRESETS[preset]
    if override is None:
        return base
    return base.model_copy(update={name: getattr(override, name) for name in override.model_fields_set})
