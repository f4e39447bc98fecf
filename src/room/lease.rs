//! A room's entry in the directory, held by its task: dropping the lease (normal exit or a
//! panic unwinding the task) removes exactly this room's entry, never a newer room that took
//! the same name. The directory creates leases; the task holds one; neither imports the other.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;

use super::RoomCmd;
use crate::ids::RoomName;

/// A running room, as the directory knows it.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    /// Commands to the room task.
    pub cmds: mpsc::Sender<RoomCmd>,
    /// Tells this room apart from a later one with the same name.
    pub generation: u64,
}

/// The shared directory map (rooms leave it through their [`DirectoryLease`]).
pub type RoomsMap = Arc<DashMap<RoomName, RoomHandle>>;

/// One room's claim on its directory entry.
#[derive(Debug)]
pub struct DirectoryLease {
    rooms: RoomsMap,
    name: RoomName,
    generation: u64,
}

impl DirectoryLease {
    /// The lease of room `name` with this generation in `rooms`.
    pub fn new(rooms: RoomsMap, name: RoomName, generation: u64) -> Self {
        Self {
            rooms,
            name,
            generation,
        }
    }

    /// The room's name.
    pub fn name(&self) -> &RoomName {
        &self.name
    }

    /// Leaves the directory now (new joins then create a fresh room); idempotent.
    pub fn release(&self) {
        self.rooms
            .remove_if(&self.name, |_, h| h.generation == self.generation);
    }
}

impl Drop for DirectoryLease {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_a_lease_removes_its_own_generation_only() {
        let rooms: RoomsMap = Arc::new(DashMap::new());
        let name = RoomName::parse("r").expect("valid");
        let (tx, _rx) = mpsc::channel(1);
        rooms.insert(
            name.clone(),
            RoomHandle {
                cmds: tx.clone(),
                generation: 2,
            },
        );
        // An older room of the same name going away leaves the newer entry alone.
        drop(DirectoryLease::new(rooms.clone(), name.clone(), 1));
        assert!(rooms.contains_key(&name));
        drop(DirectoryLease::new(rooms.clone(), name.clone(), 2));
        assert!(!rooms.contains_key(&name));
    }
}
