//! `Rooms` on its own: the ceilings (rooms, history bytes, expiry) and
//! the accounts behind them.

use super::*;

use crate::protocol::Body;
use crate::queue::RunPosition;
use crate::room::Name;

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("test room names are valid")
}

fn message(room_name: &str, id: u64, text: &str) -> Arc<Event> {
    Arc::new(Event::new(Body::Message {
        room: room(room_name),
        id,
        from: Name::guest(1),
        from_id: "c1".into(),
        text: text.to_owned(),
        ts: 0,
    }))
}

fn member(n: u64) -> RoomMember {
    let (queue, _) = crate::queue::bounded(16, crate::queue::OnSlow::Nothing);
    RoomMember {
        client: ClientId(n),
        queue,
        joined_at: RunPosition::default(),
    }
}

fn retention(history: usize, max_history_bytes: usize) -> Retention {
    Retention {
        history,
        max_history_bytes,
        ..Retention::default()
    }
}

/// Records `text` into `name` as the next id; returns how many were evicted.
fn publish(rooms: &mut Rooms, next_id: &mut u64, name: &str, text: &str) -> u64 {
    *next_id += 1;
    rooms.create(&room(name)).expect("under the room limit");
    let id = *next_id;
    let (_, evicted) = rooms
        .record(&room(name), || message(name, id, text))
        .expect("the room exists");
    evicted
}

/// Every kept id, across rooms, in order; checks the accounts on the way.
fn kept_ids(rooms: &Rooms) -> Vec<u64> {
    let mut ids: Vec<u64> = rooms
        .iter()
        .flat_map(|(_, r)| r.since(0).filter_map(|e| e.id()))
        .collect();
    ids.sort_unstable();
    let bytes: usize = rooms.iter().map(|(_, r)| r.history_bytes()).sum();
    assert_eq!(
        rooms.history_bytes(),
        bytes,
        "bytes are the sum of the rooms'"
    );
    assert_eq!(rooms.history_events(), ids.len(), "events are the sum too");
    ids
}

#[test]
fn an_event_counts_for_all_its_encodings_and_a_room_for_its_slots() {
    let mut rooms = Rooms::new(retention(1000, usize::MAX));
    let mut id = 0;
    publish(&mut rooms, &mut id, "a", &"x".repeat(10_000));
    let held = rooms.history_bytes();
    // The text, and the JSON four times over (its own, a frame, the SSE
    // block, the text line), and a little more.
    assert!(held > 50_000 && held < 52_000, "{held}");
    publish(&mut rooms, &mut id, "b", "hi");
    assert_eq!(kept_ids(&rooms), [1, 2]);
}

#[test]
fn the_per_room_cap_still_holds_and_what_it_drops_is_not_an_eviction() {
    let mut rooms = Rooms::new(retention(3, usize::MAX));
    let mut id = 0;
    for _ in 0..10 {
        assert_eq!(publish(&mut rooms, &mut id, "a", "hello"), 0);
    }
    assert_eq!(kept_ids(&rooms), [8, 9, 10]);
}

#[test]
fn past_the_budget_the_hubs_oldest_events_go_first_whatever_their_room() {
    let text = "y".repeat(1000);
    let one = {
        let mut rooms = Rooms::new(retention(1000, usize::MAX));
        publish(&mut rooms, &mut 0, "a", &text);
        rooms.history_bytes()
    };
    let mut rooms = Rooms::new(retention(1000, 10 * one));
    let mut id = 0;
    let mut evicted = 0;
    for n in 0..100 {
        let name = ["a", "b", "b", "c"][n % 4];
        evicted += publish(&mut rooms, &mut id, name, &text);
        assert!(rooms.history_bytes() <= 10 * one);
    }
    let kept = kept_ids(&rooms);
    assert!(kept.len() >= 5, "{kept:?}");
    let newest: Vec<u64> = (100 - kept.len() as u64 + 1..=100).collect();
    assert_eq!(kept, newest, "the kept events are the newest");
    assert_eq!(evicted as usize + kept.len(), 100);
}

#[test]
fn with_per_room_caps_too_each_eviction_takes_the_hubs_oldest_kept_event() {
    use std::collections::VecDeque;
    // A model: each room's ids under its cap; each eviction the smallest.
    const CAP: usize = 5;
    let mut model: HashMap<&str, VecDeque<u64>> = HashMap::new();
    let mut rooms = Rooms::new(retention(CAP, 60_000));
    let mut id = 0;
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    let mut seed = 17u64;
    let mut evictions = 0;
    for n in 0..2000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (name, size) = if n % 50 < 25 {
            ("a", 100) // a busy room, at its cap, with small messages
        } else {
            (
                names[(seed >> 33) as usize % names.len()],
                200 + (seed >> 40) as usize % 3000,
            )
        };
        let evicted = publish(&mut rooms, &mut id, name, &"m".repeat(size));
        let kept = model.entry(name).or_default();
        kept.push_back(id);
        if kept.len() > CAP {
            kept.pop_front();
        }
        for _ in 0..evicted {
            let (_, oldest) = model
                .iter_mut()
                .filter_map(|(name, ids)| ids.front().map(|&front| (front, name)))
                .min()
                .map(|(front, name)| (front, *name))
                .expect("something to evict");
            model.get_mut(oldest).expect("in the model").pop_front();
        }
        evictions += evicted;
        let mut expected: Vec<u64> = model.values().flatten().copied().collect();
        expected.sort_unstable();
        assert_eq!(kept_ids(&rooms), expected, "after publish {n}");
        assert!(rooms.history_bytes() <= 60_000);
    }
    assert!(evictions > 500, "the budget was binding: {evictions}");
}

#[test]
fn one_room_alone_cannot_hold_more_than_the_budget() {
    let budget = 100_000;
    let mut rooms = Rooms::new(retention(1000, budget));
    let mut id = 0;
    for _ in 0..50 {
        publish(&mut rooms, &mut id, "solo", &"z".repeat(5000));
        assert!(rooms.history_bytes() <= budget, "{}", rooms.history_bytes());
    }
    let kept = kept_ids(&rooms);
    assert_eq!(kept.last(), Some(&50));
    // An event bigger than the whole budget is not kept either.
    publish(&mut rooms, &mut id, "solo", &"w".repeat(budget));
    assert!(rooms.history_bytes() <= budget);
    assert!(
        !rooms.contains(&room("solo")),
        "no members, no history: gone"
    );
}

#[test]
fn a_room_evicted_empty_stays_while_it_has_members() {
    let text = "v".repeat(2000);
    let mut rooms = Rooms::new(retention(1000, 30_000));
    rooms.join(&room("busy"), member(1)).expect("room for it");
    let mut id = 0;
    publish(&mut rooms, &mut id, "busy", &text);
    for _ in 0..20 {
        publish(&mut rooms, &mut id, "other", &text);
    }
    let busy = rooms
        .get(&room("busy"))
        .expect("a room with a member stays");
    assert_eq!(busy.history_len(), 0);
    assert_eq!(
        kept_ids(&rooms).first(),
        Some(&(id - kept_ids(&rooms).len() as u64 + 1))
    );
}

#[test]
fn a_room_past_max_rooms_is_refused_and_rooms_that_exist_are_not() {
    let mut rooms = Rooms::new(Retention {
        max_rooms: 2,
        ..Retention::default()
    });
    rooms.join(&room("a"), member(1)).expect("first");
    rooms.create(&room("b")).expect("second");
    let refused = rooms.join(&room("c"), member(1)).expect_err("third");
    assert_eq!((refused.room, refused.max), (room("c"), 2));
    assert!(rooms.create(&room("c")).is_err());
    rooms.join(&room("a"), member(2)).expect("a exists");
    rooms.create(&room("b")).expect("b exists");
    assert_eq!(rooms.vacancies(), 0);
}

#[test]
fn a_room_without_members_expires_after_its_last_use_and_one_with_members_never() {
    let expiry = Duration::from_secs(60);
    let mut rooms = Rooms::new(Retention {
        room_expiry: expiry,
        ..Retention::default()
    });
    let mut id = 0;
    let start = Instant::now();
    publish(&mut rooms, &mut id, "empty", "nobody here");
    rooms.join(&room("lived-in"), member(1)).expect("room");
    publish(&mut rooms, &mut id, "lived-in", "someone here");
    rooms.join(&room("left"), member(2)).expect("room");
    publish(&mut rooms, &mut id, "left", "soon empty");
    assert!(rooms.leave(&room("left"), ClientId(2)));

    assert_eq!(rooms.expire(start + expiry / 2), 0);
    assert_eq!(rooms.len(), 3);
    let late = Instant::now() + expiry;
    assert_eq!(rooms.expire(late), 2);
    assert!(rooms.contains(&room("lived-in")) && rooms.len() == 1);
    assert_eq!(kept_ids(&rooms), [2]);
    assert_eq!(rooms.expire(late + 10 * expiry), 0, "members keep it");
}

#[test]
fn a_room_used_again_before_its_expiry_is_kept_for_another_expiry() {
    let expiry = Duration::from_millis(200);
    let mut rooms = Rooms::new(Retention {
        room_expiry: expiry,
        ..Retention::default()
    });
    let mut id = 0;
    publish(&mut rooms, &mut id, "r", "first");
    // Time passes between the two uses (this is the clock, not a wait
    // for something to happen).
    std::thread::sleep(expiry / 2);
    publish(&mut rooms, &mut id, "r", "again");
    let used = Instant::now();
    // Due by its filing, not by its last use: refiled, not forgotten.
    assert_eq!(rooms.expire(used + expiry / 4), 0);
    assert!(rooms.contains(&room("r")));
    assert_eq!(rooms.idle.len(), 1, "one entry per room");
    assert_eq!(rooms.expire(used + expiry), 1);
    assert!(rooms.is_empty() && rooms.idle.is_empty());
    assert_eq!(rooms.history_bytes(), 0);
}

#[test]
fn joining_an_idle_room_stops_its_expiry() {
    let mut rooms = Rooms::new(Retention::default());
    publish(&mut rooms, &mut 0, "r", "kept");
    assert_eq!(rooms.idle.len(), 1);
    rooms.join(&room("r"), member(1)).expect("exists");
    assert!(rooms.idle.is_empty());
    assert_eq!(
        rooms.expire(Instant::now() + Duration::from_secs(86_400)),
        0
    );
    rooms.leave(&room("r"), ClientId(1));
    assert_eq!(rooms.idle.len(), 1);
}

#[test]
fn a_room_with_nothing_to_replay_is_forgotten_as_its_last_member_leaves() {
    let mut rooms = Rooms::new(Retention::default());
    rooms.join(&room("r"), member(1)).expect("room");
    rooms.leave(&room("r"), ClientId(1));
    assert!(rooms.is_empty());
    // With no expiry, history goes with the last member too.
    let mut rooms = Rooms::new(Retention {
        room_expiry: Duration::ZERO,
        ..Retention::default()
    });
    rooms.join(&room("r"), member(1)).expect("room");
    publish(&mut rooms, &mut 0, "r", "said");
    rooms.leave(&room("r"), ClientId(1));
    assert!(rooms.is_empty());
    assert_eq!((rooms.history_bytes(), rooms.history_events()), (0, 0));
    publish(&mut rooms, &mut 1, "s", "to nobody");
    assert!(rooms.is_empty(), "kept for nobody");
}

#[test]
fn sweeps_come_a_sixteenth_of_the_expiry_apart_within_bounds() {
    let every = |secs: u64| {
        Retention {
            room_expiry: Duration::from_secs(secs),
            ..Retention::default()
        }
        .sweep_interval()
    };
    assert_eq!(every(0), None);
    assert_eq!(every(16), Some(Duration::from_secs(1)));
    assert_eq!(every(3600), Some(SWEEP_MAX));
    assert_eq!(every(u64::MAX), Some(SWEEP_MAX));
    let short = Retention {
        room_expiry: Duration::from_millis(1),
        ..Retention::default()
    };
    assert_eq!(short.sweep_interval(), Some(SWEEP_MIN));
}
