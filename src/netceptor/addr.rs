//! Node names as users write them.

/// The name every node answers to as itself, in any letter case, as Go
/// nodes do (`receptorctl work submit --node localhost`, `connect
/// localhost control`). For that reason no node may take it as its ID.
pub const LOCAL_ALIAS: &str = "localhost";

pub fn is_local_alias(name: &str) -> bool {
    name.eq_ignore_ascii_case(LOCAL_ALIAS)
}

/// `name` with the local alias replaced by `own_id`.
pub fn resolve<'a>(name: &'a str, own_id: &'a str) -> &'a str {
    if is_local_alias(name) { own_id } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alias_is_this_node_in_any_case() {
        assert_eq!(resolve("LocalHost", "a"), "a");
        assert_eq!(resolve("b", "a"), "b");
        assert!(!is_local_alias("localhost.localdomain"));
        assert!(!is_local_alias(""));
    }
}
