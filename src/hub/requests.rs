//! What a member asks for after it has joined (`Request`: say, join, leave,
//! nick, who, rooms, help), and the REST views of the rooms. Each answer goes
//! to the asker's own queue (`tell`). Runs on the hub thread only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};

use crate::auth::forbidden;
use crate::engine::{Unavailable, What};
use crate::protocol::{Body, ClientId, Event, Member, Request, RoomCount, HELP};
use crate::room::{Name, RoomName};
use crate::rooms::RoomLimit;
use crate::subscription::MAX_ROOMS;

use super::answers::{Published, Waiting};
use super::members::Seat;
use super::{Hub, MemberInfo, Refused, RoomDetail, RoomSummary};

/// The least time between two warnings that rooms are being refused.
pub(super) const ROOM_LIMIT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The most requests held from a member whose backlog is on its way.
pub(super) const HELD_REQUESTS: usize = 64;

pub(super) fn not_member(message: impl Into<String>) -> Event {
    Event::error("not_member", message)
}

impl Hub {
    pub(super) fn request(&mut self, from: ClientId, request: Request) {
        let Some(client) = self.clients.get_mut(&from) else {
            return; // it left while this request was queued
        };
        if let Some(held) = &mut client.held {
            // Its backlog comes first (`replayed`); held within a bound, so
            // that an engine slow to answer cannot make the hub hoard.
            if held.len() < HELD_REQUESTS {
                held.push(request);
                return;
            }
            let wait = "your history is on its way; send again once it has arrived";
            return self.tell(from, Event::error("rate_limited", wait));
        }
        match request {
            Request::Say { room, text } => {
                let Some(room) = room.or_else(|| client.rooms.last().cloned()) else {
                    return self.tell(from, not_member("join a room first: /join ROOM"));
                };
                if !client.access.may_publish(&room) {
                    let refusal = forbidden(format!("your token does not let you send to #{room}"));
                    return self.tell(from, refusal);
                }
                if !client.rooms.contains(&room) {
                    return self.tell(from, not_member(format!("join #{room} first")));
                }
                let (name, label) = (client.name.clone(), Arc::clone(&client.label));
                match self.say(&room, name, label, text) {
                    Ok(Published::Later(ticket)) => {
                        let say = Waiting::Say { client: from };
                        self.waiting.insert(ticket, say);
                    }
                    Ok(Published::Unavailable) => self.tell(from, Unavailable.to_event()),
                    Ok(Published::Now(_)) => {}
                    Err(refused) => self.tell(from, refused.to_event()), // a member's room exists
                }
            }
            Request::Join(room) => {
                if client.rooms.contains(&room) {
                    return; // already there: joining is idempotent
                }
                if !client.access.may_read(&room) {
                    let refusal = forbidden(format!("your token does not let you read #{room}"));
                    return self.tell(from, refusal);
                }
                if client.rooms.len() >= MAX_ROOMS {
                    let message = format!("at most {MAX_ROOMS} rooms per connection");
                    return self.tell(from, Event::error("bad_request", message));
                }
                self.join(from, room, Seat::FromOwnJoined);
            }
            Request::Leave(room) => {
                if !client.rooms.contains(&room) {
                    return self.tell(from, not_member(format!("you are not in #{room}")));
                }
                self.part(from, &room);
            }
            Request::Nick(_) if !client.access.may_rename() => {
                let refusal = forbidden("your token fixes your name (fixed_name)");
                self.tell(from, refusal);
            }
            Request::Nick(name) => {
                client.name = name.clone();
                // Other nodes show it too (presence across nodes).
                self.engine.renamed(&client.rooms, &name, &client.label);
                let welcome = Body::Welcome {
                    id: from,
                    name,
                    rooms: client.rooms.clone(),
                };
                self.tell(from, Event::new(welcome));
            }
            Request::Who(room) => {
                let Some(room) = room.or_else(|| client.rooms.last().cloned()) else {
                    return self.tell(from, not_member("join a room first: /join ROOM"));
                };
                if !client.access.may_read(&room) {
                    let refusal = forbidden(format!("your token does not let you read #{room}"));
                    return self.tell(from, refusal);
                }
                let node = self.engine.node();
                let mut members: Vec<Member> = self.rooms.get(&room).map_or_else(Vec::new, |r| {
                    r.members
                        .iter()
                        .filter_map(|m| {
                            let c = self.clients.get(&m.client)?;
                            Some(Member {
                                id: m.client,
                                name: c.name.clone(),
                                node: node.clone(),
                                user: c.access.user().cloned(),
                            })
                        })
                        .collect()
                });
                // With several nodes, theirs too (presence across nodes).
                members.extend(self.engine.elsewhere(&room).into_iter().map(|r| Member {
                    id: r.id,
                    name: r.name,
                    node: Some(r.node),
                    user: None, // not carried between nodes (docs/auth.md)
                }));
                self.tell(from, Event::new(Body::Presence { room, members }));
            }
            Request::Rooms => {
                // A token sees only the rooms it may read.
                let access = client.access.clone();
                let rooms = self
                    .summaries(&[])
                    .into_iter()
                    .filter(|r| access.may_read(&r.name))
                    .map(|r| RoomCount {
                        name: r.name,
                        members: r.members,
                    })
                    .collect();
                self.tell(from, Event::new(Body::Rooms { rooms }));
            }
            Request::Help => self.tell(from, Event::new(Body::Help { text: HELP })),
            Request::Refresh(_) => {
                // Transports with tokens handle it before the hub sees it.
                let unused = "there are no tokens to refresh on this server";
                self.tell(from, Event::error("bad_request", unused));
            }
        }
    }

    /// Publishes a message, creating its room if `--max-rooms` allows.
    pub(super) fn say(
        &mut self,
        room: &RoomName,
        from: Name,
        from_id: Arc<str>,
        text: String,
    ) -> Result<Published, Refused> {
        if let Err(refused) = self.rooms.create(room) {
            self.refused(&refused);
            return Err(refused.into());
        }
        self.metrics.published();
        let what = What::Message {
            from,
            from_id,
            text,
        };
        let published = self.broadcast(room, what);
        if !matches!(published, Published::Now(id) if id > 0) {
            // Nothing was kept here (an engine that keeps history elsewhere,
            // or one that refused): a room just created for it goes again.
            self.rooms.release(room);
        }
        Ok(published)
    }

    /// Counts a room refused at `--max-rooms`, and says so in the log (at
    /// most once a minute: the metric counts every one).
    pub(super) fn refused(&mut self, refused: &RoomLimit) {
        self.metrics.room_refused();
        if self.room_limit_warning.due() {
            warn!("{refused} (switchboard_rooms_refused_total counts every refusal)");
        } else {
            debug!("{refused}");
        }
    }

    /// Every room, sorted by name: this node's, and with several nodes the
    /// rooms that have members on the others, and those with history kept
    /// outside the hub (`stored`: room and newest id, from the engine).
    pub(super) fn summaries(&self, stored: &[(RoomName, u64)]) -> Vec<RoomSummary> {
        let mut rooms: HashMap<RoomName, RoomSummary> = self
            .rooms
            .iter()
            .map(|(name, room)| {
                let summary = RoomSummary {
                    name: name.clone(),
                    members: room.members.len(),
                    last_id: room.last_id(),
                };
                (name.clone(), summary)
            })
            .collect();
        for (name, count) in self.engine.rooms_elsewhere() {
            let summary = rooms.entry(name.clone()).or_insert(RoomSummary {
                name,
                members: 0,
                last_id: 0,
            });
            summary.members += count;
        }
        for (name, last_id) in stored {
            let summary = rooms.entry(name.clone()).or_insert(RoomSummary {
                name: name.clone(),
                members: 0,
                last_id: 0,
            });
            summary.last_id = summary.last_id.max(*last_id);
        }
        let mut rooms: Vec<RoomSummary> = rooms.into_values().collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    /// A room's members, this node's first; `None` if it has none anywhere
    /// and no history (here, or `stored`: its newest id outside the hub).
    pub(super) fn describe(&self, room: &RoomName, stored: Option<u64>) -> Option<RoomDetail> {
        let here = self.rooms.get(room);
        let elsewhere = self.engine.elsewhere(room);
        if here.is_none() && elsewhere.is_empty() && stored.is_none() {
            return None;
        }
        let node = self.engine.node();
        let mut members: Vec<MemberInfo> = here.map_or_else(Vec::new, |r| {
            r.members
                .iter()
                .filter_map(|m| {
                    let c = self.clients.get(&m.client)?;
                    Some(MemberInfo {
                        id: m.client,
                        name: c.name.clone(),
                        transport: Some(c.transport),
                        node: node.clone(),
                        user: c.access.user().cloned(),
                    })
                })
                .collect()
        });
        members.extend(elsewhere.into_iter().map(|r| MemberInfo {
            id: r.id,
            name: r.name,
            transport: None,
            node: Some(r.node),
            user: None, // not carried between nodes (docs/auth.md)
        }));
        Some(RoomDetail {
            name: room.clone(),
            members,
            last_id: here.map_or(0, |r| r.last_id()).max(stored.unwrap_or(0)),
        })
    }
}
