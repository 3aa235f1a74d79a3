//! Role contexts (a role with its application and resource chain) kept for granting.
//!
//! An entry may be stale: whoever uses one must check the versions it holds when writing (the
//! grant's guarded `INSERT` does) and drop the entry when they no longer match. Bounded: when
//! full, it starts again empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::roles::RoleContext;

const CAPACITY: usize = 4096;

#[derive(Default)]
pub(crate) struct RoleCache {
    entries: Mutex<HashMap<String, Arc<RoleContext>>>,
}

impl RoleCache {
    pub fn get(&self, role_id: &str) -> Option<Arc<RoleContext>> {
        self.lock().get(role_id).cloned()
    }

    pub fn put(&self, context: Arc<RoleContext>) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(context.role.id.clone(), context);
    }

    pub fn remove(&self, role_id: &str) {
        self.lock().remove(role_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RoleContext>>> {
        // A panic while holding the lock cannot leave the map inconsistent (every operation is
        // a single call), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
