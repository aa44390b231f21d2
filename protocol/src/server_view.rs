//! The server's view of a device: its owner, status and tags, read from an item of the
//! `GET /devices` listing. Read leniently from JSON (a listing item need not be a record
//! keytally could send), so a server that adds or omits fields still shows what it has.

use std::collections::HashMap;

use serde_json::Value;

/// What the server says about a key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerView {
    /// The owner the server assigned: the email, else the name. An owner the agent only
    /// suggested (`"suggested": true`) is not one.
    pub owner: Option<String>,
    /// The status name.
    pub status: Option<String>,
    /// The tag names (a tag may be an object with a `name`, or a bare string).
    pub tags: Vec<String>,
}

impl ServerView {
    /// Reads the owner, status and tags of one listed device.
    pub fn of(device: &Value) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let owner = device
            .pointer("/owners/items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|o| o.get("suggested").and_then(Value::as_bool) != Some(true))
            .find_map(|o| text(o.get("email")).or_else(|| text(o.get("name"))));
        let status = text(device.pointer("/status/name"));
        let tags = device
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| text(t.get("name")).or_else(|| t.as_str().map(str::to_string)))
            .collect();
        ServerView { owner, status, tags }
    }
}

/// The `yubikey.uniqueId` of one listed device, if it has one.
pub fn listed_unique_id(device: &Value) -> Option<&str> {
    device.pointer("/yubikey/uniqueId").and_then(Value::as_str)
}

/// The server's view of each listed device whose uniqueId `wanted` accepts, by uniqueId.
pub fn views_of(devices: &[Value], wanted: impl Fn(&str) -> bool) -> HashMap<String, ServerView> {
    devices
        .iter()
        .filter_map(|d| listed_unique_id(d).filter(|uid| wanted(uid)).map(|uid| (uid.to_string(), ServerView::of(d))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owner_status_and_tags_of_a_listed_device() {
        let device = json!({"yubikey": {"uniqueId": "1"}, "owners": {"count": 1, "items": [{"name": "Alice", "email": "alice@example.com"}]}, "status": {"name": "Active"}, "tags": [{"name": "desk"}, "spare"]});
        let view = ServerView::of(&device);
        assert_eq!(view.owner.as_deref(), Some("alice@example.com"));
        assert_eq!(view.status.as_deref(), Some("Active"));
        assert_eq!(view.tags, ["desk", "spare"]);
        let listing = [device, json!({"yubikey": {"uniqueId": "2"}})];
        let views = views_of(&listing, |uid| uid == "1");
        assert_eq!(views.keys().collect::<Vec<_>>(), ["1"]);
    }

    #[test]
    fn a_suggested_owner_is_not_the_servers_owner() {
        let device = json!({"owners": {"count": 1, "items": [{"name": "alice", "sid": "1000", "suggested": true}]}});
        assert_eq!(ServerView::of(&device), ServerView::default());
    }
}
