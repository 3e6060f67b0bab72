//! The authorizer's settings (`--authorizer-enable`, `--super-users`,
//! `--allow-everyone-if-no-acl-found`); the authorizer itself is `crate::acl`.

use chronik_raft::acl::valid_principal;

/// The authorizer settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    pub enabled: bool,
    pub super_users: Vec<String>,
    pub allow_if_no_acl: bool,
}

impl AuthorizerConfig {
    pub fn resolve(
        enabled: bool,
        super_users: Option<&str>,
        allow_if_no_acl: bool,
    ) -> Result<Self, String> {
        let super_users = super_users
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|p| {
                if valid_principal(p) {
                    Ok(p.to_string())
                } else {
                    Err(format!("super-users: `{p}` is not a principal (Type:name)"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AuthorizerConfig {
            enabled,
            super_users,
            allow_if_no_acl,
        })
    }
}
