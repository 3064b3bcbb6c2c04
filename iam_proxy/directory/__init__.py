"""Directories the proxy reads identities from; today LDAP (OpenLDAP, Active Directory, 389-ds, ...).

One `LdapDirectoryClient` per configured `directories[]` entry is built by the app and shared by the
`ldap` authenticator (HTTP Basic checked by a bind) and the `ldap` enricher (groups for identities
that another authenticator produced).
"""

from .ldap import DirectoryUnavailable, DirectoryUser, LdapDirectoryClient, LookupFailed

__all__ = ["DirectoryUnavailable", "DirectoryUser", "LdapDirectoryClient", "LookupFailed"]
