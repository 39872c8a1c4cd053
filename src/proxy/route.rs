//! The route table: host name -> instance or service group, published by the controller with `arc-swap`.
//!
//! A table is immutable once built; the controller publishes a new one when routing changed and
//! swaps it in. Workers read it through an `arc_swap::Cache` (one atomic load per request when
//! nothing changed). Cost of a lookup of a name of 16 to 32 bytes (nearly every one): the port
//! split off from the value's last word, the name read as four words, hashed with the case of
//! its letters ignored by two multiplies, and a probe of the part's open-addressed places, each
//! of which holds its key's length and words (compared with the name's two 16-byte ends, as
//! they are, by two vector compares) and, for an instance, its slot and its running
//! incarnation; no allocation, no copy, no loop over the bytes; the
//! byte-by-byte validation of the name only for a host that is not routed
//! ([`RouteTable::find`]). An instance's incarnation, and its meter, are then reached from the
//! place found, not through the slots. A keep-alive connection's [`RouteMemo`] skips all of
//! it: it compares the host with the one before and holds the route itself, down to the meter.
//!
//! A new table shares what did not change with the one before ([`RouteTable::edit`]): the host
//! names are split by hash into [`SHARDS`] parts, each behind an `Arc`, and a change copies only
//! the parts it touches. With 100,000 hosts, starting one instance copies some 400 entries, not
//! 100,000. Running incarnations keep their index ("slot") in [`RouteTable::upstreams`] from
//! table to table, so the parts that did not change still point at the right ones; a slot's
//! new incarnation changes the places that lead to it (nearly always one), found from the hash
//! of the host routed to it last.

use std::net::SocketAddr;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

use uuid::Uuid;

use super::meter::{Inflight, Meter};
use crate::config::Balance;

/// Longest host name (RFC 1035); longer names match nothing.
const MAX_HOST: usize = 253;

/// One running incarnation of an instance, as the proxy forwards to it.
///
/// A restarted instance gets a new `Upstream` (its address may change, its pooled connections are
/// gone) that shares the instance's [`Meter`], so the request budget spans restarts.
#[derive(Debug)]
pub struct Upstream {
    /// The instance.
    pub id: Uuid,
    /// The instance's name.
    pub name: Arc<str>,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// Its request budget, shared by all its incarnations.
    pub meter: Arc<Meter>,
    /// Requests in flight, per worker.
    pub inflight: Inflight,
    /// The instance's own request body limit (its own, else its group's), set by the
    /// controller: 0 = none set (the proxy's `max_body_bytes` applies), `u64::MAX` = no limit.
    /// An atomic so that a reload changes it without a new incarnation (which would drop the
    /// pooled connections); read with one relaxed load per request that carries a body length.
    max_body: AtomicU64,
    /// Set while a watcher waits for the drain, so that the request that ends last says so.
    draining: AtomicBool,
    /// Bumped by [`Upstream::retire`]: a watcher that started before it gives up.
    watch: AtomicU64,
    /// Signalled when a draining upstream has nothing left in flight, and on retirement.
    idle: Notify,
}

/// How [`Upstream::drained`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Nothing is in flight any more.
    Idle,
    /// [`Upstream::retire`] ended the watch (the instance was deleted or serves again).
    Retired,
}

impl Upstream {
    /// A running incarnation of instance `id` at `addr`, for `workers` proxy workers.
    pub fn new(
        id: Uuid,
        name: Arc<str>,
        addr: SocketAddr,
        meter: Arc<Meter>,
        workers: usize,
    ) -> Upstream {
        Upstream {
            id,
            name,
            addr,
            meter,
            inflight: Inflight::new(workers),
            max_body: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            watch: AtomicU64::new(0),
            idle: Notify::new(),
        }
    }

    /// The largest request body this upstream takes: its own limit, else `default` (the
    /// proxy's). Cost: one relaxed load.
    #[inline]
    pub fn max_body(&self, default: u64) -> u64 {
        match self.max_body.load(Ordering::Relaxed) {
            0 => default,
            own => own,
        }
    }

    /// Sets the upstream's own body limit: `None` = the proxy's applies, `Some(u64::MAX)` = no
    /// limit (`Some(0)` is taken as 1: 0 marks "none set").
    pub fn set_max_body(&self, limit: Option<u64>) {
        self.max_body
            .store(limit.map_or(0, |l| l.max(1)), Ordering::Relaxed);
    }

    /// Called by worker `worker` when one of its requests to this upstream ends (forwarded or
    /// not): releases its in-flight slot and, if that was the last request of a draining upstream,
    /// wakes [`Upstream::drained`]. Cost: one uncontended read-modify-write and one load; the
    /// slots are summed only while draining.
    ///
    /// Why the wake-up cannot be missed: the slot's release and the load of `draining` here, and
    /// the store of `draining` and the loads of the slots in `drained`, are all `SeqCst`, so either
    /// this load sees `draining` (and the last request to leave sees every slot empty: each leave
    /// precedes the other workers' later loads in the same total order) or the watcher's sum sees
    /// this slot released. `notify_one` keeps a permit when the watcher is not waiting yet.
    #[inline]
    pub fn leave(&self, worker: usize) {
        self.inflight.leave(worker);
        if self.draining.load(Ordering::SeqCst) && self.inflight.total() == 0 {
            self.idle.notify_one();
        }
    }

    /// Marks the upstream draining and resolves once nothing is in flight, woken by the request
    /// that leaves last ([`Upstream::leave`]); or once [`Upstream::retire`] ends the watch.
    pub async fn drained(&self) -> Drain {
        let watch = self.watch.load(Ordering::SeqCst);
        self.draining.store(true, Ordering::SeqCst);
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the checks, so a wake-up between them and the wait is kept.
            idle.as_mut().enable();
            if self.watch.load(Ordering::SeqCst) != watch {
                return Drain::Retired;
            }
            if self.inflight.total() == 0 {
                return Drain::Idle;
            }
            idle.await;
        }
    }

    /// Ends every [`Upstream::drained`] watch of this upstream (which then resolves
    /// [`Drain::Retired`]) and stops the requests' drain check; a later `drained` watches anew.
    pub fn retire(&self) {
        self.draining.store(false, Ordering::SeqCst);
        self.watch.fetch_add(1, Ordering::SeqCst);
        self.idle.notify_waiters();
    }
}

/// What a host name leads to.
#[derive(Debug, Clone)]
pub enum Target {
    /// One instance, by its index in [`RouteTable::upstreams`]; `None` while it is not running
    /// (starting, stopped): such a request gets 503.
    Instance(Option<usize>),
    /// A service group.
    Group(GroupRoute),
}

/// A service group's routable instances.
#[derive(Debug, Clone)]
pub struct GroupRoute {
    /// Indexes into [`RouteTable::upstreams`] of the running, non-draining members.
    pub members: Box<[usize]>,
    /// How to pick among them.
    pub balance: Balance,
}

/// Where a looked-up host leads: [`Target`] as a lookup gives it, a running instance with its
/// incarnation.
#[derive(Debug, Clone, Copy)]
pub enum Route<'t> {
    /// One instance; `None` while it is not running (also for a slot the table holds nothing in).
    Instance(Option<Running<'t>>),
    /// A service group.
    Group(&'t GroupRoute),
}

/// A running instance as a lookup finds it: its slot in [`RouteTable::upstreams`] (by which a
/// worker keeps its own state of the instance) and the incarnation in that slot, so that a request
/// reaches the instance's meter without reading the table's slots again.
#[derive(Debug, Clone, Copy)]
pub struct Running<'t> {
    /// The slot in [`RouteTable::upstreams`].
    pub slot: usize,
    /// The incarnation in it.
    pub upstream: &'t Upstream,
    /// The instance's meter (`upstream.meter`), which a keep-alive connection's memo holds too:
    /// the request's count is then one load from the memo.
    pub meter: &'t Meter,
}

/// How many parts the host names are split into (a power of two): a change copies one part.
pub const SHARDS: usize = 256;

/// What a host name leads to, as the table holds it: an instance's slot inline, so that a
/// lookup (or a connection's memo) reaches the instance without another load; a group by its
/// index in its part's `groups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Instance(Option<u32>),
    Group(u32),
}

/// One place of a part's open-addressed table: a routed host name's (lower-case) key, for a
/// key of 8 to [`SHORT_NAME`] bytes its words at [`word_places`] (so that a lookup compares the
/// key without reading its bytes: [`Words`]), where it leads, and for an instance that
/// runs its incarnation (the table's slot's, [`RouteTable::upstreams`]), so that a lookup
/// reaches the incarnation and its meter from the place it found, not through the slots. An
/// empty key is an empty place. One cache line (64 bytes, aligned), so a probe reads one line
/// and a place's index is a shift.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Place {
    words: Words,
    key: Box<[u8]>,
    to: To,
    /// For `To::Instance(Some(slot))`: the incarnation in `slot`, if any (kept so by the
    /// builder: [`RouteTableBuilder::set_upstream`]). `None` for anything else.
    running: Option<Arc<Upstream>>,
}

const _: () = assert!(std::mem::size_of::<Place>() == 64);

impl Place {
    /// An empty place (an empty boxed slice allocates nothing).
    fn empty() -> Place {
        Place {
            words: Words::default(),
            key: Box::default(),
            to: To::Instance(None),
            running: None,
        }
    }

    fn new(key: Box<[u8]>, to: To, running: Option<Arc<Upstream>>) -> Place {
        let words = if (8..=SHORT_NAME).contains(&key.len()) {
            Words::of(&key)
        } else {
            Words::default()
        };
        Place {
            words,
            key,
            to,
            running,
        }
    }
}

/// One part of the host names' places (name -> where it leads): a table of linear probing
/// whose length is a power of two, at most [`MAX_LOAD`] full; a place emptied is filled again
/// by the places after it that belong before it (backward shift: no tombstones, so a miss ends
/// at the first empty place). Its own `Arc`, apart from the part's count and groups
/// ([`Groups`]); a lookup finds the places from the table's [`Heads`] (one load for their
/// start, one for their mask).
///
/// hashbrown's `HashTable` (which this replaced) found a name in some 35 instructions: a
/// 16-byte group of control bytes, a tag match, a bitmask walk and a call of the compare. Here
/// a probe is one compare of the length and one of the words (two vector compares), and a hit
/// two branches.
type Places = Arc<[Place]>;

/// The groups the hosts of a part of the host names lead to.
#[derive(Debug, Default, Clone)]
struct Groups {
    /// By [`To::Group`]'s index.
    groups: Vec<GroupRoute>,
    /// Indexes of `groups` no host leads to any more, for the next group.
    free: Vec<u32>,
}

/// How full a part's places may be, as a fraction of 16: 13/16. Linear probing then finds a
/// routed name in 1.3 probes on average (the meter bench's 1,010 names).
const MAX_LOAD: usize = 13;

/// Places for no name.
fn no_places() -> Places {
    Arc::from([Place::empty()])
}

/// The place a name of `hash` is looked for first.
#[inline(always)]
fn home(places: &[Place], hash: u64) -> usize {
    hash as usize & (places.len() - 1)
}

/// The place after `i`.
#[inline(always)]
fn next(places: &[Place], i: usize) -> usize {
    (i + 1) & (places.len() - 1)
}

/// From the place of `hash` on, the place that `is` the key looked for, or the empty place
/// where it would go (`is` must not hold for an empty place).
#[inline(always)]
fn probe(places: &[Place], hash: u64, is: impl Fn(&Place) -> bool) -> Result<usize, usize> {
    let mut i = home(places, hash);
    loop {
        // SAFETY: `home` and `next` mask by `places.len() - 1`, below the length: a part always
        // has places, a power of two of them (`no_places`, `reserve`).
        let slot = unsafe { places.get_unchecked(i) };
        if is(slot) {
            return Ok(i);
        }
        if slot.key.is_empty() {
            return Err(i);
        }
        i = next(places, i);
    }
}

/// The place of the exact (lower-case, not empty) `key`, or the empty place where it would go.
fn place_of(places: &[Place], key: &[u8], hash: u64) -> Result<usize, usize> {
    probe(places, hash, |slot| *slot.key == *key)
}

/// Puts a new key in (the places have room for it: [`reserve`]).
fn insert(places: &mut [Place], slot: Place) {
    let Err(i) = place_of(places, &slot.key, hash_host(&slot.key)) else {
        unreachable!("a key is inserted once");
    };
    places[i] = slot;
}

/// Room for one more key besides the `len` there are, within [`MAX_LOAD`]: places twice as
/// many, every key placed again.
fn reserve(places: &mut Places, len: usize) {
    if (len + 1) * 16 <= places.len() * MAX_LOAD {
        return;
    }
    let mut grown = vec![Place::empty(); (places.len() * 2).max(8)];
    if let Some(own) = Arc::get_mut(places) {
        // No other table shares them: the keys move, they are not copied.
        for slot in own.iter_mut().filter(|slot| !slot.key.is_empty()) {
            insert(&mut grown, std::mem::replace(slot, Place::empty()));
        }
    } else {
        for slot in places.iter().filter(|slot| !slot.key.is_empty()) {
            insert(&mut grown, slot.clone());
        }
    }
    *places = Arc::from(grown);
}

/// Takes the key at place `i` out: the places after it that would be looked for at or before
/// `i` move back, so that every key stays reachable from its home without a gap.
fn remove(places: &mut [Place], mut i: usize) -> Place {
    let removed = std::mem::replace(&mut places[i], Place::empty());
    let mut j = i;
    loop {
        j = next(places, j);
        if places[j].key.is_empty() {
            return removed;
        }
        let at = home(places, hash_host(&places[j].key));
        // The key at `j` stays where it is if its home lies (cyclically) in (i, j].
        let stays = if i <= j {
            i < at && at <= j
        } else {
            i < at || at <= j
        };
        if !stays {
            places[i] = std::mem::replace(&mut places[j], Place::empty());
            i = j;
        }
    }
}

/// The part a host name's hash falls in: its top bits, which its part does not use to place
/// the name (it takes the low bits), so that the names of one part still spread over its
/// places. One shift, no mask.
#[inline]
fn shard_of(hash: u64) -> usize {
    (hash >> (64 - SHARDS.trailing_zeros())) as usize
}

/// Where a lookup finds each part's places: the first place, and the mask of a place's offset
/// in bytes (their count less one, times the 64 bytes of a place), by part. Two arrays, so that
/// a part's index is scaled in the load itself; an offset, so that a probe's next place is an
/// `add` and an `and` and its address needs no shift. Read from the table's `Arc`s, a lookup
/// paid for the `Arc`'s header offset, the count's decrement and the shift: the heads take five
/// instructions off a lookup and count in a scratch program's loop (102 → 90 with the hash's
/// change, [`short_hash`]; 22.1 → 19.1 cycles modelled by `llvm-mca -mcpu=znver3`).
///
/// Worked out whenever a table is built ([`RouteTableBuilder::build`], [`Heads::set`]): a
/// builder changes its table's places (a part copied or grown is a new `Arc`) and leaves the
/// heads behind, so nothing looks a name up in a builder's table (the builder finds places
/// through `places`), and a lookup checks that they agree where debug assertions are on. This
/// costs a publish one pass over the 256 parts: editing one route of 1,000 and building the
/// table took 2.1–2.2 µs before and 2.3–2.5 µs after in a scratch program (no change at
/// 100,000 routes, where copying the part is most of it).
#[derive(Debug, Clone)]
#[repr(C)]
struct Heads {
    first: [NonNull<Place>; SHARDS],
    mask: [usize; SHARDS],
}

// SAFETY: the heads point into the places of the table that holds them (`Arc<[Place]>`, which
// is `Send` and `Sync`), which they are only read through, for as long as the table lives.
unsafe impl Send for Heads {}
// SAFETY: as for `Send`.
unsafe impl Sync for Heads {}

impl Heads {
    /// The heads of `places`.
    fn of(places: &[Places; SHARDS]) -> Box<Heads> {
        let mut heads = Box::new(Heads {
            first: [NonNull::dangling(); SHARDS],
            mask: [0; SHARDS],
        });
        heads.set(places);
        heads
    }

    /// Makes these the heads of `places` (in place: a table is built on every publish).
    fn set(&mut self, places: &[Places; SHARDS]) {
        for (part, places) in places.iter().enumerate() {
            self.first[part] = NonNull::from(&**places).cast();
            self.mask[part] = (places.len() - 1) * size_of::<Place>();
        }
    }
}

/// Where a name was found: its part, and its place there.
type Found<'t> = (usize, &'t Place);

/// An immutable snapshot of where every host goes.
#[derive(Debug)]
pub struct RouteTable {
    /// Each part's places, by [`shard_of`] (an array: a part's index needs no bounds check).
    places: Box<[Places; SHARDS]>,
    /// Where each part's places are, for a lookup; they describe `places` once the table is
    /// built ([`Heads`]).
    heads: Box<Heads>,
    /// How many names each part holds. Copied whole by an edit (1 KiB, no reference counts).
    lens: Box<[u32]>,
    /// The groups of each part, all behind one more `Arc`: an edit that changes no group (most
    /// do not) copies none of them, and shares them by one reference count, not 256.
    groups: Arc<[Arc<Groups>]>,
    /// Unique per built table, so that a remembered lookup can tell which table it was made in
    /// (an address could be reused by a later table).
    generation: u64,
    /// By the slot numbers in [`Target`]: the running incarnation, and which places lead to the
    /// slot. Never changed once the table is built: a [`RouteMemo`] holds pointers into it.
    slots: Vec<Held>,
}

/// A slot as the table holds it: the incarnation in it (`None`: a free slot, or an instance
/// that is not running), and how to find the places that lead to it, which hold the
/// incarnation too ([`Place::running`]) and are changed with it.
#[derive(Debug, Clone, Default)]
struct Held {
    upstream: Option<Arc<Upstream>>,
    /// How many places lead to the slot.
    leads: u32,
    /// The hash of the host routed to the slot last: its place is found from that hash's home.
    last: u64,
}

impl Default for RouteTable {
    fn default() -> RouteTable {
        let (places, groups) = (no_places(), Arc::new(Groups::default()));
        let places = Box::new(std::array::from_fn(|_| Arc::clone(&places)));
        RouteTable {
            heads: Heads::of(&places),
            places,
            lens: vec![0; SHARDS].into_boxed_slice(),
            groups: (0..SHARDS).map(|_| Arc::clone(&groups)).collect(),
            generation: 0,
            slots: Vec::new(),
        }
    }
}

impl RouteTable {
    /// An empty table builder.
    pub fn builder() -> RouteTableBuilder {
        RouteTableBuilder::default()
    }

    /// A builder that starts from this table and shares with it every part it does not change.
    /// Costs a copy of the part pointers and of the upstream slots, not of the hosts.
    pub fn edit(&self) -> RouteTableBuilder {
        RouteTableBuilder {
            table: RouteTable {
                places: self.places.clone(),
                heads: self.heads.clone(),
                lens: self.lens.clone(),
                groups: Arc::clone(&self.groups),
                generation: 0,
                slots: self.slots.clone(),
            },
        }
    }

    /// Looks up a `Host` header value (or an `:authority`): the port is stripped, ASCII case is
    /// folded and a trailing dot ignored, without allocating.
    #[inline]
    pub fn lookup(&self, host: &[u8]) -> Option<Route<'_>> {
        self.find(host).ok().flatten()
    }

    /// Where a `Host` value leads (`Ok(None)`: a well-formed host nobody routes), or
    /// [`BadHost`].
    ///
    /// A host that is routed needs no validation of its name: it equals (up to case) a stored
    /// key, and every key is a host name. So the port is split off and checked, the name looked
    /// up, and only a miss pays the full check ([`host_name`]) that tells 400 from 404. A hit
    /// on a name of 8 to [`SHORT_NAME`] bytes (nearly every one) costs splitting off the port,
    /// reading four words, two multiplies and a probe, all inline.
    ///
    /// The two shapes nearly every `Host` value has get a predicted branch each, which gives
    /// the name without working out the port: a value whose last byte sorts after `:` (a
    /// letter: no port, and no trailing dot either), and one that ends in `:` and four digits.
    /// The name's length is then a constant off the value's, so the reads of the name (and the
    /// hash, and the probe) need not wait for the digits to be counted: a length worked out
    /// from the count cost about 5 ns more per lookup (a program of 10^7 lookups, 16.3 against
    /// 10.3 ns). Every other shape goes through [`without_port`], out of line.
    #[inline(always)]
    fn find(&self, host: &[u8]) -> Result<Option<Route<'_>>, BadHost> {
        let len = host.len();
        // One test of the length serves both shapes' reads (a value of five bytes or less is
        // rare, and goes the general way).
        let found = if len <= 5 {
            self.find_other_shape(host)
        } else if host[len - 1] > b':' {
            self.find_name(host)
        } else if host[len - 5] == b':' && four_digits(&host[len - 4..]) {
            // A name ending in a dot is looked up with it, and missed: no key ends in one
            // (`RouteTableBuilder::route`); the checked path takes the dot off.
            self.find_name(&host[..len - 5])
        } else {
            self.find_other_shape(host)
        };
        // Where the name was found is joined with the checked path's answer as two pointers,
        // and the route worked out once after: joined as routes, the hit's route was written to
        // the stack and read back (as the checked path returns its answer in memory).
        let (part, place) = match found {
            Some(found) => found,
            None => match self.find_checked(host)? {
                Some(found) => found,
                None => return Ok(None),
            },
        };
        Ok(self.route_of(part, place))
    }

    /// [`RouteTable::find`] for a `Host` value of another shape than its two inline ones.
    #[inline(never)]
    fn find_other_shape(&self, host: &[u8]) -> Option<Found<'_>> {
        without_port(host).and_then(|name| self.index_of(name))
    }

    /// [`RouteTable::find`] for a host the fast path did not find: validated first.
    #[cold]
    #[inline(never)]
    fn find_checked(&self, host: &[u8]) -> Result<Option<Found<'_>>, BadHost> {
        Ok(self.index_of(host_name(host)?))
    }

    /// Where a host name already stripped of its port ([`host_name`]) is.
    #[inline(always)]
    fn index_of(&self, name: &[u8]) -> Option<Found<'_>> {
        if name.last() == Some(&b'.') {
            return self.index_of_absolute(name);
        }
        self.find_name(name)
    }

    /// [`RouteTable::index_of`] for a name ending in a dot (a fully qualified name), which is
    /// looked up without it. A branch of its own, out of line: taking the dot off inline made
    /// every lookup's length wait for the read of the last byte.
    #[cold]
    #[inline(never)]
    fn index_of_absolute(&self, name: &[u8]) -> Option<Found<'_>> {
        self.find_name(&name[..name.len() - 1])
    }

    /// Where a name (no port, no trailing dot) is: read as four words, or otherwise, by its
    /// length. A name of 16 to [`SHORT_NAME`] bytes (most: `<instance>.<base domain>`) is
    /// looked for inline, where its words' places are constants off its start and its end
    /// ([`word_places`]), which loads take as they are: eight instructions fewer per lookup
    /// than the places of every short length, worked out.
    #[inline(always)]
    fn find_name(&self, name: &[u8]) -> Option<Found<'_>> {
        if (16..=SHORT_NAME).contains(&name.len()) {
            self.find_ends(name)
        } else {
            self.find_other(name)
        }
    }

    /// [`RouteTable::find_other`] for a name of 8 to 15 bytes (those of 16 to [`SHORT_NAME`] go
    /// to [`RouteTable::find_ends`]): its words at [`word_places`] are read once, hashed with
    /// their case ignored ([`short_hash`]) and compared with each probed key's words as they
    /// are; a key of the same length whose words differ (the name's case differs, or a
    /// collision) is compared with case folded, out of line. A hit on a lower-case name is one
    /// branch.
    #[inline(always)]
    fn find_short(&self, name: &[u8]) -> Option<Found<'_>> {
        let len = name.len();
        let words = short_words(name);
        let hash = short_hash(words, len);
        self.probe(hash, |slot| {
            let differ = (slot.key.len() ^ len) as u64
                | (slot.words.0[0] ^ words[0])
                | (slot.words.0[1] ^ words[1])
                | (slot.words.0[2] ^ words[2])
                | (slot.words.0[3] ^ words[3]);
            differ == 0 || (slot.key.len() == len && same_but_case(differ, &slot.key, name))
        })
    }

    /// [`RouteTable::find_short`] for a name of 16 to [`SHORT_NAME`] bytes, inline: its bytes
    /// read twice, as four words for the hash and as its two ends ([`Ends`]) for the compare,
    /// which then takes the key's length and two vector compares, not four words held in
    /// registers across the hash (with the multiplies' fixed registers, they were spilled to
    /// the stack): 111 → 102 instructions per lookup and count in a scratch program's loop,
    /// 24.4 → 22.1 cycles modelled (`llvm-mca -mcpu=znver3`). A key of the same length whose
    /// ends differ in bit 5 only may be the name in other case: compared with case folded, out
    /// of line.
    #[inline(always)]
    fn find_ends(&self, name: &[u8]) -> Option<Found<'_>> {
        let len = name.len();
        let hash = short_hash(short_words(name), len);
        // SAFETY: `find_name` took a name of 16 to SHORT_NAME bytes here.
        let ends = unsafe { Ends::of(name) };
        self.probe(hash, |slot| {
            slot.key.len() == len
                && (ends.are(&slot.words)
                    || (ends.are_but_case(&slot.words) && same_folded(&slot.key, name)))
        })
    }

    /// [`RouteTable::find_name`] for a name of another length, out of line: of 8 to 15 bytes
    /// read as four words too; shorter than 8 bytes or longer than [`SHORT_NAME`], hashed and
    /// compared with its case folded as it is read.
    #[inline(never)]
    fn find_other(&self, name: &[u8]) -> Option<Found<'_>> {
        if (8..16).contains(&name.len()) {
            return self.find_short(name);
        }
        if name.is_empty() || name.len() > MAX_HOST {
            return None;
        }
        self.probe(hash_name::<true>(name), |slot| eq_folded(&slot.key, name))
    }

    /// The place of `hash`'s part that `is` the name looked for, if any: [`probe`] over the
    /// part's [`Heads`].
    #[inline(always)]
    fn probe(&self, hash: u64, is: impl Fn(&Place) -> bool) -> Option<Found<'_>> {
        let part = shard_of(hash);
        let (first, mask) = (self.heads.first[part], self.heads.mask[part]);
        debug_assert_eq!(
            (first, mask),
            (
                NonNull::from(&self.places[part][0]),
                (self.places[part].len() - 1) * size_of::<Place>()
            ),
            "heads of a built table"
        );
        // The offset of the place at `home`, and of the one after it (`next`).
        let mut at = (hash as usize).wrapping_mul(size_of::<Place>()) & mask;
        loop {
            // SAFETY: `first` is the first of the part's places and `mask + 64` their size in
            // bytes (`Heads::set`, for the table as built: only a builder changes places, and
            // `build` sets the heads anew), so a masked offset is a place's.
            let slot = unsafe { first.byte_add(at).as_ref() };
            if is(slot) {
                return Some((part, slot));
            }
            if slot.key.is_empty() {
                return None;
            }
            at = (at + size_of::<Place>()) & mask;
        }
    }

    /// Where `place` (one of `part`'s, in this table) leads: a running instance's incarnation
    /// is in the place itself.
    #[inline(always)]
    fn route_of<'t>(&'t self, part: usize, place: &'t Place) -> Option<Route<'t>> {
        // A place that holds an incarnation leads to an instance: the one test a hit on a
        // running instance takes.
        if let Some(upstream) = place.running.as_deref() {
            // Read without a branch: a slot no worker has (a request answered as to an
            // instance that is not running) if the builder broke its invariant.
            debug_assert!(matches!(place.to, To::Instance(Some(_))), "{place:?}");
            let slot = match place.to {
                To::Instance(Some(slot)) => slot,
                To::Instance(None) | To::Group(_) => u32::MAX,
            };
            return Some(Route::Instance(Some(Running {
                slot: slot as usize,
                upstream,
                meter: &upstream.meter,
            })));
        }
        Some(match place.to {
            To::Instance(_) => Route::Instance(None),
            To::Group(i) => Route::Group(self.groups[part].groups.get(i as usize)?),
        })
    }

    /// This table's unique number.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of host names routed.
    pub fn len(&self) -> usize {
        self.lens.iter().map(|&len| len as usize).sum()
    }

    /// True when no host is routed.
    pub fn is_empty(&self) -> bool {
        self.lens.iter().all(|&len| len == 0)
    }

    /// The running incarnation in `slot`, if any.
    #[inline]
    pub fn upstream(&self, slot: usize) -> Option<&Arc<Upstream>> {
        self.slots.get(slot)?.upstream.as_ref()
    }

    /// Where `target` is kept in part `s`, for a host that led to `was` before: an instance
    /// inline, a group in the part's groups (which are copied only then).
    fn place(&mut self, s: usize, target: Target, was: Option<To>) -> To {
        match (&target, was) {
            (&Target::Instance(slot), None | Some(To::Instance(_))) => instance(slot),
            _ => {
                let Groups { groups, free } = self.groups_mut(s);
                place(groups, free, target, was)
            }
        }
    }

    /// The groups of part `s`, to change: copied first if shared with another table.
    fn groups_mut(&mut self, s: usize) -> &mut Groups {
        Arc::make_mut(&mut Arc::make_mut(&mut self.groups)[s])
    }

    /// Every running incarnation, by slot; `None` for a free slot.
    pub fn upstreams(&self) -> impl ExactSizeIterator<Item = Option<&Arc<Upstream>>> {
        self.slots.iter().map(|held| held.upstream.as_ref())
    }

    /// The slot `slot`, to change; the slots grow as needed.
    fn slot_mut(&mut self, slot: usize) -> &mut Held {
        if slot >= self.slots.len() {
            self.slots.resize(slot + 1, Held::default());
        }
        &mut self.slots[slot]
    }

    /// A place of hash `hash` is to lead to `to`: the incarnation it holds for it
    /// ([`Place::running`]), counted as one more place leading to its slot.
    fn lead(&mut self, to: To, hash: u64) -> Option<Arc<Upstream>> {
        let To::Instance(Some(slot)) = to else {
            return None;
        };
        let held = self.slot_mut(slot as usize);
        held.leads += 1;
        held.last = hash;
        held.upstream.clone()
    }

    /// A place that led to `to` leads elsewhere now, or is gone.
    fn unlead(&mut self, to: To) {
        if let To::Instance(Some(slot)) = to {
            self.slots[slot as usize].leads -= 1;
        }
    }

    /// The places that lead to `slot` take its incarnation, which changed: those around the
    /// home of the host routed to it last (a slot is nearly always led to by one host), and
    /// every part is looked through only if that did not find them all.
    fn repoint(&mut self, slot: usize) {
        let held = &self.slots[slot];
        let (upstream, leads, last) = (held.upstream.clone(), held.leads, held.last);
        let to = To::Instance(Some(slot as u32));
        let part = &mut self.places[shard_of(last)];
        let mut found = 0;
        let mut i = home(part, last);
        while !part[i].key.is_empty() {
            if part[i].to == to {
                Arc::make_mut(part)[i].running.clone_from(&upstream);
                found += 1;
            }
            i = next(part, i);
        }
        if found == leads {
            return;
        }
        for part in self.places.iter_mut() {
            if part.iter().any(|place| place.to == to) {
                let places = Arc::make_mut(part).iter_mut();
                for place in places.filter(|place| place.to == to) {
                    place.running.clone_from(&upstream);
                }
            }
        }
    }
}

/// A `Host` (or `:authority`) that is not a host name with an optional numeric port: empty, with
/// a character a host name cannot have, or a port that is not a number up to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHost;

/// Longest `Host` value a [`RouteMemo`] remembers: a longest name, its trailing dot and a port.
const MEMO_HOST: usize = MAX_HOST + 1 + 6;

/// One connection's memory of where its last request's host led: a keep-alive connection nearly
/// always names the same host, so a byte compare and a generation check replace the validation
/// and the hash lookup. Cost on a hit: one compare of the host bytes; the route is then in the
/// memo itself (an instance's incarnation, or a group, by pointer), so the request reaches its
/// instance's meter without reading the table. The bytes live in the memo too (no allocation;
/// it is part of the connection's state).
#[derive(Debug)]
pub struct RouteMemo {
    /// The table the memo was made from; [`FORGOTTEN`] when it remembers nothing.
    generation: u64,
    /// The remembered host's length, for one of 16 to [`SHORT_NAME`] bytes (compared by
    /// `words`, inline); for one of another length, with [`OTHER_LENGTH`] set.
    len: usize,
    /// For a host of 8 to [`SHORT_NAME`] bytes, its words at [`word_places`], which a hit
    /// compares.
    words: Words,
    route: Remembered,
    /// Another host's bytes.
    host: [u8; MEMO_HOST],
}

/// Set in [`RouteMemo`]'s `len` for a host that is not compared inline: one test of the length
/// then tells a host of the memo's from the rest, and an inline one's words' places.
const OTHER_LENGTH: usize = 1 << (usize::BITS - 1);

/// A generation no table has: tables are numbered from 0 (an empty default) upwards by one per
/// build, so a memo that holds it never hits.
const FORGOTTEN: u64 = u64::MAX;

/// A [`Route`] without its lifetime: what the pointers point at is owned by the table the memo
/// was made from, and is read only while that table is lent to [`RouteMemo::resolve`] again.
/// Flat, so that a running instance is told by one test (`upstream` not null) and its meter is
/// then one load: a running instance has `upstream` and `meter`, a group `group`, an instance
/// that is not running neither.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    upstream: *const Upstream,
    meter: *const Meter,
    slot: usize,
    group: *const GroupRoute,
}

// SAFETY: the pointers are only read, and only while the table that owns what they point at is
// borrowed (see `RouteMemo::resolve`); `Upstream`, `Meter` and `GroupRoute` are `Sync`, so reading
// them from whichever thread holds the memo is sound.
unsafe impl Send for RouteMemo {}

impl Default for RouteMemo {
    fn default() -> RouteMemo {
        RouteMemo {
            generation: FORGOTTEN,
            len: OTHER_LENGTH,
            words: Words::default(),
            route: Remembered::of(Route::Instance(None)),
            host: [0; MEMO_HOST],
        }
    }
}

impl RouteMemo {
    /// Where `host` leads in `table` (`Ok(None)`: nowhere), from memory when this connection asked
    /// the same of the same table last time; a malformed host is [`BadHost`]. Always inlined: a
    /// call would return the route through memory, and the meter's address would wait on the
    /// store and the load; a miss's work is out of line ([`RouteMemo::remember`]).
    #[inline(always)]
    pub fn resolve<'t>(
        &mut self,
        table: &'t RouteTable,
        host: &[u8],
    ) -> Result<Option<Route<'t>>, BadHost> {
        let hit = self.generation == table.generation && self.is(host);
        if !hit && !self.remember(table, host)? {
            return Ok(None);
        }
        // SAFETY: the route was taken from `table`, just now or when the memo's generation was
        // `table`'s. Generations are unique per built table (`RouteTableBuilder::build`) and a
        // table never changes once built (its fields are private; `upstreams` and the parts'
        // groups are only written by a builder), so the pointers point into `table`, alive and
        // unchanged for `'t`. (The route is read back from the memo even after a miss, so that
        // a hit's route goes from the memo straight to its use: joined with a miss's returned
        // value, it would be stored and reloaded, and the meter's address would wait on that.)
        Ok(Some(unsafe { self.route.route() }))
    }

    /// Whether `host` is the remembered host: for one of 16 to [`SHORT_NAME`] bytes (most), by
    /// its length and its words inline, at places that are constants off its ends (as
    /// [`RouteTable::find_name`] reads a name); for one of another length, out of line.
    #[inline(always)]
    fn is(&self, host: &[u8]) -> bool {
        let len = host.len();
        if len == self.len {
            // SAFETY: an untagged length is of 16 to SHORT_NAME bytes (`remember`), and the
            // host is as long.
            unsafe { Ends::of(host) }.are(&self.words)
        } else {
            len | OTHER_LENGTH == self.len && self.is_other(host)
        }
    }

    /// [`RouteMemo::is`] for a host of the memo's length, shorter than 16 bytes or longer than
    /// [`SHORT_NAME`].
    #[inline(never)]
    fn is_other(&self, host: &[u8]) -> bool {
        let len = host.len();
        if (8..=SHORT_NAME).contains(&len) {
            Words::of(host) == self.words
        } else {
            eq_bytes(&self.host[..len.min(MEMO_HOST)], host)
        }
    }

    /// A host the memo did not have: looked up, and its route kept in the memo (`false`: the host
    /// leads nowhere). A host too long to keep is not remembered for the next request.
    #[inline(never)]
    fn remember(&mut self, table: &RouteTable, host: &[u8]) -> Result<bool, BadHost> {
        let Some(route) = table.find(host)? else {
            return Ok(false);
        };
        self.route = Remembered::of(route);
        let len = host.len();
        if len > MEMO_HOST {
            self.generation = FORGOTTEN;
            return Ok(true);
        }
        if (8..=SHORT_NAME).contains(&len) {
            self.words = Words::of(host);
        } else {
            self.host[..len].copy_from_slice(host);
        }
        let tag = if (16..=SHORT_NAME).contains(&len) {
            0
        } else {
            OTHER_LENGTH
        };
        (self.len, self.generation) = (len | tag, table.generation);
        Ok(true)
    }
}

impl Remembered {
    #[inline]
    fn of(route: Route<'_>) -> Remembered {
        let mut remembered = Remembered {
            upstream: std::ptr::null(),
            meter: std::ptr::null(),
            slot: 0,
            group: std::ptr::null(),
        };
        match route {
            Route::Instance(Some(running)) => {
                remembered.upstream = std::ptr::from_ref(running.upstream);
                remembered.meter = std::ptr::from_ref(running.meter);
                remembered.slot = running.slot;
            }
            Route::Instance(None) => {}
            Route::Group(group) => remembered.group = std::ptr::from_ref(group),
        }
        remembered
    }

    /// The route again, for the lifetime of the table it was taken from.
    ///
    /// # Safety
    /// That table must be alive and unchanged for `'t`.
    #[inline]
    unsafe fn route<'t>(self) -> Route<'t> {
        // SAFETY: the caller's; a pointer that is not null was made from a reference.
        unsafe {
            if !self.upstream.is_null() {
                Route::Instance(Some(Running {
                    slot: self.slot,
                    upstream: &*self.upstream,
                    meter: &*self.meter,
                }))
            } else if !self.group.is_null() {
                Route::Group(&*self.group)
            } else {
                Route::Instance(None)
            }
        }
    }
}

/// The host name of a `Host` value: its port (digits only, at most 65535) removed, after checking
/// that it is a host name (RFC 3986 `reg-name` characters, or a bracketed IPv6 literal) and not
/// empty. Costs one pass over the bytes; the route memo skips it for a host it has seen.
pub fn host_name(host: &[u8]) -> Result<&[u8], BadHost> {
    let (name, port) = if host.first() == Some(&b'[') {
        let end = host.iter().position(|&b| b == b']').ok_or(BadHost)?;
        let (literal, rest) = host.split_at(end + 1);
        if !literal[1..end]
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(BadHost);
        }
        match rest {
            [] => (literal, None),
            [b':', port @ ..] => (literal, Some(port)),
            _ => return Err(BadHost),
        }
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
            None => (host, None),
        }
    };
    let port_ok = port.is_none_or(port_ok);
    let name_ok = !name.is_empty() && (name[0] == b'[' || name.iter().all(|&b| is_name_byte(b)));
    if port_ok && name_ok {
        Ok(name)
    } else {
        Err(BadHost)
    }
}

/// The name of a `Host` value whose port, if any, is well-formed (digits only, possibly none,
/// at most 65535), where the port ends the value. `None` for anything else ending in digits
/// (six or more, or a port over 65535), which only the checked path can tell from a name.
///
/// A value that does not end in `:` and digits is returned whole: if it holds a colon it is
/// not a host name (unless a bracketed IPv6 literal, which is whole too), so it cannot equal a
/// routed name and the lookup misses on to the checked path.
///
/// A value of eight bytes or more is read as its last word: which of its bytes are digits and
/// where the last non-digit is come from a few word operations (no loop over the port); only
/// a five-digit port's value is worked out, to check it against 65535. Measured with a
/// 27-byte `Host` and a four-digit port: 269 → 232 instructions per lookup and count
/// (callgrind), against the byte-wise scan ([`without_port_bytewise`]) it replaces.
///
/// A lookup tells the two common shapes, no port and a four-digit one, by a byte or two before
/// it gets here ([`RouteTable::find`]); [`RouteTable::find_other_shape`] calls this, out of
/// line, for the others.
#[inline]
fn without_port(host: &[u8]) -> Option<&[u8]> {
    let len = host.len();
    if len < 8 {
        return without_port_bytewise(host);
    }
    // Byte k of the word is host[len - 8 + k]: the last byte is the highest.
    let digits = (not_digits(word(host, len - 8)).leading_zeros() / 8) as usize;
    if digits >= 6 {
        // Six digits or more (as the byte-wise scan: the checked path decides).
        return None;
    }
    if host[len - 1 - digits] != b':' {
        return Some(host);
    }
    let name = &host[..len - 1 - digits];
    if digits < 5 {
        return Some(name);
    }
    let port = host[len - 5..]
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    (port <= 65_535).then_some(name)
}

/// The high bit of each byte of `w` that is not an ASCII digit. A digit is '0' to '9', 0x30
/// to 0x39: with 0x30 taken off (by xor) it is below 10, and adding 0x76 to its low seven bits
/// leaves the high bit clear. No carry crosses bytes.
#[inline(always)]
fn not_digits(w: u64) -> u64 {
    let x = w ^ (0x30 * ONES);
    (((x & !HIGH) + 0x76 * ONES) | x) & HIGH
}

/// [`without_port`] a byte at a time, back over at most six bytes: for values shorter than a
/// word. It checks the port as [`port_ok`] does, in the same pass that finds it: finding the
/// colon first and then calling [`port_ok`] measured 312 instructions per lookup against 237.
/// Out of line: values shorter than a word are rare.
#[inline(never)]
fn without_port_bytewise(host: &[u8]) -> Option<&[u8]> {
    let mut port = 0u32;
    let mut scale = 1;
    let mut at = host.len();
    while at > 0 && host.len() - at < 6 {
        match host[at - 1] {
            digit @ b'0'..=b'9' => {
                port += u32::from(digit - b'0') * scale;
                scale *= 10;
                at -= 1;
            }
            b':' => return (port <= 65_535).then(|| &host[..at - 1]),
            _ => return Some(host),
        }
    }
    // Digits only (a name such as `8080`, whole), or six digits: the checked path decides.
    (at == 0).then_some(host)
}

/// Whether the four bytes are digits: [`not_digits`] of them as the low half of a word (the
/// high half's zero bytes are not digits, and are masked off).
#[inline(always)]
fn four_digits(bytes: &[u8]) -> bool {
    let Ok(bytes) = <[u8; 4]>::try_from(bytes) else {
        return false;
    };
    not_digits(u64::from(u32::from_le_bytes(bytes))) & 0x8080_8080 == 0
}

/// A port: digits only (possibly none, RFC 3986), at most 65535.
#[inline]
fn port_ok(port: &[u8]) -> bool {
    port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65_535
}

/// A byte a `reg-name` may hold (RFC 3986 §3.2.2: unreserved, sub-delims, `%` of an escape):
/// one table load per byte.
#[inline]
fn is_name_byte(b: u8) -> bool {
    NAME_BYTES[usize::from(b)]
}

/// [`is_name_byte`] as a table.
static NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~!$&'()*+,;=%";
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
};

/// Longest name a lookup reads as four words ([`short_words`]).
const SHORT_NAME: usize = 32;

/// Where the four words a name (or a memo's host) of 8 to [`SHORT_NAME`] bytes is read as
/// start: they cover every byte, and depend only on the length (for 16 bytes or less, the first
/// two are the last two again).
#[inline(always)]
fn word_places(len: usize) -> [usize; 4] {
    [0, (len - 8).min(8), len.saturating_sub(16), len - 8]
}

/// The four words at [`word_places`] of a name of 8 to [`SHORT_NAME`] bytes, as they are.
/// Each is read without a check for the end of the name (the compiler cannot tell that the
/// two middle places leave room for a word, and checked reads cost a lookup some eight
/// instructions): the length is checked once, here, where a lookup has checked it already, so
/// the compiler drops this check too.
#[inline(always)]
fn short_words(name: &[u8]) -> [u64; 4] {
    let len = name.len();
    assert!((8..=SHORT_NAME).contains(&len), "a short name's words");
    word_places(len).map(|at| {
        debug_assert!(at + 8 <= len);
        // SAFETY: for a length of 8 to SHORT_NAME (asserted above), each of `word_places` is
        // at most `len - 8`, so the eight bytes from it are the name's; `[u8; 8]` has no
        // alignment to keep.
        u64::from_le_bytes(unsafe { *name.as_ptr().add(at).cast::<[u8; 8]>() })
    })
}

/// A name's [`short_words`] as a place or a memo keeps them: aligned, so that the two halves
/// of a name of 16 to [`SHORT_NAME`] bytes (its first sixteen bytes and its last sixteen,
/// [`word_places`]) are each one aligned 16-byte load ([`Ends`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, align(16))]
struct Words([u64; 4]);

impl Words {
    /// The [`short_words`] of a name of 8 to [`SHORT_NAME`] bytes.
    fn of(name: &[u8]) -> Words {
        Words(short_words(name))
    }
}

/// A name of 16 to [`SHORT_NAME`] bytes as its first sixteen bytes and its last sixteen, read
/// once and compared with the [`Words`] of each key probed: two 16-byte compares (SSE2, which
/// every x86-64 has), or four words elsewhere.
#[derive(Clone, Copy)]
struct Ends {
    #[cfg(target_arch = "x86_64")]
    halves: [std::arch::x86_64::__m128i; 2],
    #[cfg(not(target_arch = "x86_64"))]
    words: [u64; 4],
}

impl Ends {
    /// The ends of `name`.
    ///
    /// # Safety
    /// `name` must be 16 to [`SHORT_NAME`] bytes long.
    #[inline(always)]
    unsafe fn of(name: &[u8]) -> Ends {
        let len = name.len();
        debug_assert!((16..=SHORT_NAME).contains(&len));
        debug_assert_eq!(word_places(len), [0, 8, len - 16, len - 8]);
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::_mm_loadu_si128;
            // SAFETY: sixteen bytes from the start and sixteen to the end of a name of at
            // least sixteen (the caller's); an unaligned load.
            unsafe {
                Ends {
                    halves: [
                        _mm_loadu_si128(name.as_ptr().cast()),
                        _mm_loadu_si128(name.as_ptr().add(len - 16).cast()),
                    ],
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Ends {
                words: short_words(name),
            }
        }
    }

    /// Whether these are the ends whose bytes `words` holds, exactly.
    #[inline(always)]
    fn are(&self, words: &Words) -> bool {
        self.same_but(words, 0)
    }

    /// Whether these are the ends `words` holds but for bit 5 of some bytes ([`CASE`]): they
    /// may be the same in another case (to be compared with case folded).
    #[inline(always)]
    fn are_but_case(&self, words: &Words) -> bool {
        self.same_but(words, 0x20)
    }

    /// Whether the ends equal `words` with the bits of `ignored` set in every byte of both.
    #[inline(always)]
    fn same_but(&self, words: &Words, ignored: u8) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            // SAFETY: SSE2 is part of x86-64; `Words` is 16-byte aligned, and its 32 bytes
            // are two aligned loads.
            unsafe {
                let mask = _mm_set1_epi8(ignored as i8);
                let key = std::ptr::from_ref(words).cast::<__m128i>();
                let [head, tail] = self.halves.map(|half| _mm_or_si128(half, mask));
                let same = _mm_and_si128(
                    _mm_cmpeq_epi8(head, _mm_or_si128(_mm_load_si128(key), mask)),
                    _mm_cmpeq_epi8(tail, _mm_or_si128(_mm_load_si128(key.add(1)), mask)),
                );
                _mm_movemask_epi8(same) == 0xffff
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            same_words_but(&self.words, words, ignored)
        }
    }
}

/// [`Ends::same_but`] by words, where there is no SSE2 (and in a test that holds the two to
/// the same answers).
#[cfg(any(test, not(target_arch = "x86_64")))]
#[inline(always)]
fn same_words_but(ends: &[u64; 4], words: &Words, ignored: u8) -> bool {
    let differ = (0..4).fold(0, |d, i| d | (ends[i] ^ words.0[i]));
    differ & !(u64::from(ignored) * ONES) == 0
}

/// Every byte's bit 5 (0x20), which is what tells a lower-case ASCII letter from its capital:
/// a word with it set is the same whatever the case of the letters in it.
const CASE: u64 = 0x2020_2020_2020_2020;

/// The hash of a name of 8 to [`SHORT_NAME`] bytes from its [`short_words`] and length, with
/// the case of its letters ignored: bit 5 is cleared in every byte (one `and` per word, where
/// folding the case costs eight operations). Bytes that are not letters may then hash alike
/// (`_` and DEL, `-` and CR): only where the hash falls, as the compare is exact.
///
/// Two folded multiplies (wyhash's and foldhash's step): the first of the first word and of
/// the last with the length, then the third word mixed in and the second multiplied in. The
/// first product takes the first and last words, whose places need no arithmetic on the length
/// (the second's is a `min`). Every word is folded with the one mask (clearing bit 5: the first
/// and second words' `xor` with a constant then keeps the mask's form; setting it made LLVM
/// write that as a second mask), and the length enters as it is (a word of text is never near
/// zero, so no constant is needed to keep the product from it): 96 → 92 instructions per lookup
/// and count in a scratch program's loop, with as many probes per name over 18 name patterns.
/// For a name of 16 bytes or less the second word is the last and the third the first
/// ([`word_places`]).
#[inline(always)]
fn short_hash(words: [u64; 4], len: usize) -> u64 {
    let [a, b, c, d] = words.map(|w| w & !CASE);
    let product = u128::from(a ^ HASH_K1) * u128::from(d ^ len as u64);
    let mixed = (product as u64 ^ c) ^ (product >> 64) as u64;
    folded_multiply(mixed, b ^ HASH_K1)
}

/// The hash a name is placed and looked for by, whatever the case of its letters.
fn hash_host(name: &[u8]) -> u64 {
    if (8..=SHORT_NAME).contains(&name.len()) {
        short_hash(short_words(name), name.len())
    } else {
        hash_name::<true>(name)
    }
}

/// Whether `key` (8 to [`SHORT_NAME`] bytes, of the name's length), whose words differ from
/// the name's as they are by the bits of `differ`, is the name in other case. Other keys of the
/// same length (many names differ in a few characters only) are told apart by those bits with
/// bit 5 ([`CASE`]) left out, inline; only a key that may differ in case alone is compared with
/// case folded, out of line (lower-case `Host` values never get there).
#[inline(always)]
fn same_but_case(differ: u64, key: &[u8], name: &[u8]) -> bool {
    differ & !CASE == 0 && same_folded(key, name)
}

/// [`eq_folded`], out of line.
#[cold]
#[inline(never)]
fn same_folded(key: &[u8], name: &[u8]) -> bool {
    eq_folded(key, name)
}

/// `a` equals `b`: [`eq_words`] without folding (a `Host` value is short, and the call to
/// `memcmp` that comparing slices makes cost more than the compare).
#[inline(always)]
fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    eq_words::<false>(a, b)
}

/// `key` (lower-case) equals `input` with its ASCII case folded.
#[inline]
fn eq_folded(key: &[u8], input: &[u8]) -> bool {
    eq_words::<true>(key, input)
}

/// `key` equals `input`, whose case is folded first if `FOLD`; eight bytes per step, inline.
#[inline(always)]
fn eq_words<const FOLD: bool>(key: &[u8], input: &[u8]) -> bool {
    let len = key.len();
    if len != input.len() {
        return false;
    }
    if len < 8 {
        return if FOLD {
            key.eq_ignore_ascii_case(input)
        } else {
            key.iter().zip(input).all(|(k, b)| k == b)
        };
    }
    if len <= SHORT_NAME {
        // Words that cover every byte, as at `word_places`: four compares, no loop, no early
        // exit to predict.
        let at = |i| word(key, i) ^ word_of::<FOLD>(input, i);
        let head = if len > 16 { at(0) | at(8) } else { 0 };
        return head | at(len.saturating_sub(16)) | at(len - 8) == 0;
    }
    let mut i = 0;
    while i + 8 <= len {
        if word(key, i) != word_of::<FOLD>(input, i) {
            return false;
        }
        i += 8;
    }
    // The last word may overlap the one before: comparing bytes twice is harmless.
    i == len || word(key, len - 8) == word_of::<FOLD>(input, len - 8)
}

/// The eight bytes of `bytes` at `at`, case folded if `FOLD`.
#[inline(always)]
fn word_of<const FOLD: bool>(bytes: &[u8], at: usize) -> u64 {
    if FOLD {
        fold_case(word(bytes, at))
    } else {
        word(bytes, at)
    }
}

/// Every byte of a word 1, and every byte's high bit: for byte-wise tests on whole words.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

const HASH_K1: u64 = 0x243f_6a88_85a3_08d3;
const HASH_K2: u64 = 0x1319_8a2e_0370_7344;

/// [`hash_name`]'s starting value for a name of `len` bytes.
#[inline(always)]
fn hash_seed(len: usize) -> u64 {
    0x9e37_79b9_7f4a_7c15 ^ len as u64
}

/// [`hash_name`]'s last step, from its last two words (the first already mixed).
#[inline(always)]
fn hash_end(a: u64, b: u64, seed: u64) -> u64 {
    folded_multiply(a ^ HASH_K2 ^ seed, b ^ HASH_K1)
}

/// Hashes `bytes`, with their ASCII case folded if `FOLD` (the same hash as of the folded
/// bytes unfolded), sixteen bytes per step: case folding by SWAR (no branch per byte) and one
/// folded 64x64->128-bit multiply per sixteen bytes (foldhash's and wyhash's mixing step).
/// Short inputs are read as two overlapping words, as wyhash does.
#[inline(always)]
fn hash_name<const FOLD: bool>(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    let seed = hash_seed(len);
    let (a, b) = if len >= 8 {
        let mut h = seed;
        let mut i = 0;
        while len - i > 16 {
            h = folded_multiply(
                word_of::<FOLD>(bytes, i) ^ HASH_K1,
                word_of::<FOLD>(bytes, i + 8) ^ h,
            );
            i += 16;
        }
        // The last 8 to 16 bytes, as two words that may overlap.
        (
            word_of::<FOLD>(bytes, len.saturating_sub(16)) ^ h,
            word_of::<FOLD>(bytes, len - 8),
        )
    } else if len >= 4 {
        let half = |at| {
            let h = u64::from(half(bytes, at));
            if FOLD { fold_case(h) } else { h }
        };
        (half(0), half(len - 4))
    } else if len > 0 {
        let three =
            u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]) << 16;
        (if FOLD { fold_case(three) } else { three }, 0)
    } else {
        (0, 0)
    };
    hash_end(a, b, seed)
}

#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[inline]
fn half(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Lower-cases the ASCII letters of eight bytes at once; other bytes are left alone.
#[inline]
fn fold_case(x: u64) -> u64 {
    let low7 = x & !HIGH;
    // High bit of each byte: set where the byte is >= 'A', and where it is > 'Z' (7-bit, no carries).
    let ge_a = low7 + (0x80 - u64::from(b'A')) * ONES;
    let gt_z = low7 + (0x80 - u64::from(b'Z') - 1) * ONES;
    let upper = ge_a & !gt_z & !x & HIGH;
    x | (upper >> 2)
}

#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Builds a [`RouteTable`], from nothing ([`RouteTable::builder`]) or from another
/// ([`RouteTable::edit`]). A part of the host names is copied the first time it is changed.
#[derive(Debug, Default)]
pub struct RouteTableBuilder {
    table: RouteTable,
}

impl RouteTableBuilder {
    /// Adds a running incarnation in a new slot and returns the slot for [`Target`]s.
    pub fn upstream(&mut self, upstream: Arc<Upstream>) -> usize {
        self.table.slots.push(Held {
            upstream: Some(upstream),
            ..Held::default()
        });
        self.table.slots.len() - 1
    }

    /// Puts `upstream` in `slot` (`None` frees it); the slots grow as needed. The hosts routed
    /// to the slot lead to the new incarnation: each place that leads to it is changed too.
    pub fn set_upstream(&mut self, slot: usize, upstream: Option<Arc<Upstream>>) {
        let held = self.table.slot_mut(slot);
        let same = match (&held.upstream, &upstream) {
            (Some(was), Some(now)) => Arc::ptr_eq(was, now),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        held.upstream = upstream;
        if held.leads > 0 {
            self.table.repoint(slot);
        }
    }

    /// The running incarnation in `slot`, if any.
    pub fn upstream_at(&self, slot: usize) -> Option<&Arc<Upstream>> {
        self.table.upstream(slot)
    }

    /// Routes `host` (ASCII case folded, a trailing dot taken off, as a lookup does) to
    /// `target`; a later call for the same host replaces the earlier one. An empty host is not
    /// routed: no `Host` value leads to it (it is [`BadHost`]), and callers route validated
    /// names only.
    pub fn route(&mut self, host: &str, target: Target) {
        let key = key_of(host);
        debug_assert!(!key.is_empty(), "an empty host name is never routed");
        if key.is_empty() {
            return;
        }
        let key = key.into_boxed_slice();
        let hash = hash_host(&key);
        let s = shard_of(hash);
        let table = &mut self.table;
        match place_of(&table.places[s], &key, hash) {
            Ok(i) => {
                let was = table.places[s][i].to;
                let to = table.place(s, target, Some(was));
                table.unlead(was);
                let running = table.lead(to, hash);
                let place = &mut Arc::make_mut(&mut table.places[s])[i];
                (place.to, place.running) = (to, running);
            }
            Err(_) => {
                let to = table.place(s, target, None);
                let running = table.lead(to, hash);
                reserve(&mut table.places[s], table.lens[s] as usize);
                insert(
                    Arc::make_mut(&mut table.places[s]),
                    Place::new(key, to, running),
                );
                table.lens[s] += 1;
            }
        }
    }

    /// Routes `host` nowhere any more; `false` if it was not routed.
    pub fn unroute(&mut self, host: &str) -> bool {
        let key = key_of(host);
        let hash = hash_host(&key);
        let s = shard_of(hash);
        let table = &mut self.table;
        let Ok(i) = place_of(&table.places[s], &key, hash) else {
            return false;
        };
        let removed = remove(Arc::make_mut(&mut table.places[s]), i);
        table.lens[s] -= 1;
        table.unlead(removed.to);
        if let To::Group(g) = removed.to {
            let Groups { groups, free } = table.groups_mut(s);
            release(groups, free, g);
        }
        true
    }

    /// The finished table.
    pub fn build(mut self) -> RouteTable {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        self.table.generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        self.table.heads.set(&self.table.places);
        self.table
    }
}

/// The key a host name is routed by: lower-case, without a trailing dot. No key ends in a dot,
/// so a lookup can look a name up with its dot and miss, and leave the dot to the checked path
/// ([`RouteTable::find`]).
fn key_of(host: &str) -> Vec<u8> {
    host.strip_suffix('.')
        .unwrap_or(host)
        .to_ascii_lowercase()
        .into_bytes()
}

/// Where `target` is kept in a part: an instance inline, a group in `groups` (in the place of
/// the group the host led to before, `was`, else in a free place).
fn place(groups: &mut Vec<GroupRoute>, free: &mut Vec<u32>, target: Target, was: Option<To>) -> To {
    match (target, was) {
        (Target::Group(group), Some(To::Group(i))) => {
            groups[i as usize] = group;
            To::Group(i)
        }
        (Target::Group(group), _) => To::Group(match free.pop() {
            Some(i) => {
                groups[i as usize] = group;
                i
            }
            None => {
                groups.push(group);
                u32::try_from(groups.len() - 1).expect("fewer than 2^32 groups in one part")
            }
        }),
        (Target::Instance(slot), was) => {
            if let Some(To::Group(i)) = was {
                release(groups, free, i);
            }
            instance(slot)
        }
    }
}

/// Where an instance in `slot` (if any) is kept: inline.
fn instance(slot: Option<usize>) -> To {
    To::Instance(slot.map(|s| u32::try_from(s).expect("fewer than 2^32 slots")))
}

/// Group place `i` of a part is no longer led to: emptied, and kept for the next group.
fn release(groups: &mut [GroupRoute], free: &mut Vec<u32>, i: u32) {
    groups[i as usize] = GroupRoute {
        members: Box::new([]),
        balance: Balance::RoundRobin,
    };
    free.push(i);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str) -> Arc<Upstream> {
        Arc::new(Upstream::new(
            Uuid::new_v4(),
            name.into(),
            ([127, 0, 0, 1], 1).into(),
            Arc::new(Meter::new(0, 0)),
            1,
        ))
    }

    fn table() -> RouteTable {
        let mut b = RouteTable::builder();
        let a = b.upstream(upstream("a"));
        b.route("a.localhost", Target::Instance(Some(a)));
        b.route("stopped.localhost", Target::Instance(None));
        b.route(
            "g.example.com",
            Target::Group(GroupRoute {
                members: vec![a].into(),
                balance: Balance::RoundRobin,
            }),
        );
        b.build()
    }

    #[test]
    fn host_normalisation() {
        let t = table();
        for host in [
            "a.localhost",
            "A.LocalHost",
            "a.localhost:8080",
            "a.localhost.",
            "A.LOCALHOST.:1",
            "a.localhost.:8080",
        ] {
            assert!(
                matches!(
                    t.lookup(host.as_bytes()),
                    Some(Route::Instance(Some(Running { slot: 0, .. })))
                ),
                "{host}"
            );
        }
        assert!(matches!(
            t.lookup(b"stopped.localhost"),
            Some(Route::Instance(None))
        ));
        assert!(matches!(
            t.lookup(b"G.example.com:443"),
            Some(Route::Group(_))
        ));
        assert!(t.lookup(b"b.localhost").is_none());
        assert!(t.lookup(b"").is_none());
        assert!(t.lookup(&[b'a'; 1000]).is_none());
        assert!(t.lookup(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn memo_follows_table_and_host() {
        let t = table();
        let mut memo = RouteMemo::default();
        assert!(matches!(
            memo.resolve(&t, b"a.localhost"),
            Ok(Some(Route::Instance(Some(Running { slot: 0, .. }))))
        ));
        assert!(matches!(
            memo.resolve(&t, b"a.localhost"),
            Ok(Some(Route::Instance(Some(Running { slot: 0, .. }))))
        ));
        assert!(matches!(
            memo.resolve(&t, b"stopped.localhost"),
            Ok(Some(Route::Instance(None)))
        ));
        assert!(matches!(memo.resolve(&t, b"nobody.localhost"), Ok(None)));
        // A group is remembered by its place: the second answer comes from the memo.
        for _ in 0..2 {
            assert!(matches!(
                memo.resolve(&t, b"g.example.com"),
                Ok(Some(Route::Group(g))) if *g.members == [0]
            ));
        }
        assert_eq!(memo.resolve(&t, b"a.localhost:abc").err(), Some(BadHost));
        assert_eq!(memo.resolve(&t, b"").err(), Some(BadHost));
        // A new table: remembered answers of the old one are not used.
        let mut b = RouteTable::builder();
        b.route("a.localhost", Target::Instance(None));
        let t2 = b.build();
        assert!(matches!(
            memo.resolve(&t, b"a.localhost"),
            Ok(Some(Route::Instance(Some(Running { slot: 0, .. }))))
        ));
        assert!(matches!(
            memo.resolve(&t2, b"a.localhost"),
            Ok(Some(Route::Instance(None)))
        ));
    }

    #[test]
    fn folded_compare() {
        assert!(eq_folded(
            b"instance-517.localhost",
            b"Instance-517.LOCALHOST"
        ));
        assert!(!eq_folded(
            b"instance-517.localhost",
            b"instance-518.localhost"
        ));
        assert!(!eq_folded(
            b"instance-517.localhosx",
            b"instance-517.localhost"
        ));
        assert!(eq_folded(b"abc", b"ABC"));
        assert!(!eq_folded(b"abc", b"abcd"));
        assert!(eq_folded(b"exactly8", b"EXACTLY8"));
        assert!(!eq_folded(b"exactly8", b"exactlY9"));
        assert_eq!(host_name(b"host:123456"), Err(BadHost), "not a port");
        assert_eq!(host_name(b"a.b.c:65535"), Ok(&b"a.b.c"[..]));
    }

    #[test]
    fn later_route_replaces_earlier() {
        let mut b = RouteTable::builder();
        b.set_upstream(3, Some(upstream("x")));
        b.route("x.localhost", Target::Instance(None));
        b.route("X.localhost", Target::Instance(Some(3)));
        let t = b.build();
        assert_eq!(t.len(), 1);
        assert!(matches!(
            t.lookup(b"x.localhost"),
            Some(Route::Instance(Some(Running { slot: 3, .. })))
        ));
    }

    /// A name routed with a trailing dot is the name without it, as a `Host` value with one
    /// is: found with or without the dot, in any case, with a port or not; unrouted either way.
    #[test]
    fn a_trailing_dot_is_no_part_of_the_name() {
        let mut b = RouteTable::builder();
        let slot = b.upstream(upstream("i"));
        b.route("Instance-517.localhost.", Target::Instance(Some(slot)));
        b.route("short.io.", Target::Instance(None));
        let t = b.build();
        assert_eq!(t.len(), 2);
        for host in [
            "instance-517.localhost",
            "instance-517.localhost.",
            "instance-517.localhost.:8080",
            "INSTANCE-517.localhost.:8080",
            "instance-517.localhost.:80",
        ] {
            assert!(
                matches!(
                    t.lookup(host.as_bytes()),
                    Some(Route::Instance(Some(Running { slot: 0, .. })))
                ),
                "{host}"
            );
        }
        for host in ["short.io", "short.io.", "short.io.:8080"] {
            assert!(
                matches!(t.lookup(host.as_bytes()), Some(Route::Instance(None))),
                "{host}"
            );
        }
        let mut b = t.edit();
        assert!(b.unroute("instance-517.localhost"));
        assert!(b.unroute("short.io."));
        assert!(b.build().is_empty());
    }

    /// Where a route leads, comparably: an instance's slot and incarnation, a group's place.
    fn leads(route: Option<Route<'_>>) -> Option<(Option<usize>, usize)> {
        route.map(|r| match r {
            Route::Instance(running) => (
                running.map(|r| r.slot),
                running.map_or(0, |r| std::ptr::from_ref(r.upstream) as usize),
            ),
            Route::Group(g) => (None, std::ptr::from_ref(g) as usize),
        })
    }

    /// A restarted instance: its slot gets a new incarnation in an edit that does not route its
    /// host again, and the host leads to the new one; the table before still leads to the old.
    #[test]
    fn a_slots_new_incarnation_is_where_its_host_leads() {
        let (first, second) = (upstream("a"), upstream("a"));
        let mut b = RouteTable::builder();
        let slot = b.upstream(Arc::clone(&first));
        b.route("a.localhost", Target::Instance(Some(slot)));
        b.route("b.localhost", Target::Instance(None));
        let before = b.build();
        let mut edit = before.edit();
        edit.set_upstream(slot, Some(Arc::clone(&second)));
        let after = edit.build();
        let running = |t: &RouteTable| match t.lookup(b"a.localhost:8080") {
            Some(Route::Instance(Some(running))) => std::ptr::from_ref(running.upstream),
            _ => panic!("a.localhost is running"),
        };
        assert_eq!(running(&after), Arc::as_ptr(&second));
        assert_eq!(running(&before), Arc::as_ptr(&first));
        let mut edit = after.edit();
        edit.set_upstream(slot, None);
        let stopped = edit.build();
        assert!(matches!(
            stopped.lookup(b"a.localhost"),
            Some(Route::Instance(None))
        ));
        assert_eq!(running(&after), Arc::as_ptr(&second));
    }

    #[test]
    fn a_route_to_an_empty_slot_is_not_running() {
        let mut b = RouteTable::builder();
        b.set_upstream(2, Some(upstream("c")));
        b.route("empty.localhost", Target::Instance(Some(1)));
        b.route("c.localhost", Target::Instance(Some(2)));
        let t = b.build();
        assert!(matches!(
            t.lookup(b"empty.localhost"),
            Some(Route::Instance(None))
        ));
        let Some(Route::Instance(Some(running))) = t.lookup(b"c.localhost") else {
            panic!("c.localhost is running");
        };
        assert_eq!(running.slot, 2);
        assert!(std::ptr::eq(running.upstream, &**t.upstream(2).unwrap()));
        assert!(std::ptr::eq(running.meter, &*running.upstream.meter));
    }

    proptest::proptest! {
        /// A connection's memo answers every request as the table does, whatever the hosts'
        /// lengths (short, word-compared, long, too long to keep) and however they differ (one
        /// byte anywhere), and across a change of table.
        #[test]
        fn the_memo_answers_as_the_table(steps in proptest::collection::vec((0usize..14, proptest::option::of((0usize..300, proptest::num::u8::ANY)), proptest::bool::ANY), 1..40)) {
            let names: Vec<String> = [1usize, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 100, 253]
                .iter()
                .enumerate()
                .map(|(i, &len)| {
                    let mut name = format!("{i}").repeat(len);
                    name.truncate(len);
                    name
                })
                .collect();
            let build = |shift: usize| {
                let mut b = RouteTable::builder();
                for (i, name) in names.iter().enumerate() {
                    let slot = b.upstream(upstream(name));
                    b.route(name, match (i + shift) % 3 {
                        0 => Target::Instance(Some(slot)),
                        1 => Target::Instance(None),
                        _ => Target::Group(GroupRoute { members: vec![slot].into(), balance: Balance::RoundRobin }),
                    });
                }
                b.build()
            };
            let tables = [build(0), build(1)];
            let mut memo = RouteMemo::default();
            for (pick, change, other) in steps {
                // A routed name (or one too long to remember), with a port or not; then the
                // same with one byte changed, which the memo must not take for it.
                let mut host = names.get(pick).cloned().unwrap_or_else(|| "x".repeat(300)).into_bytes();
                if pick % 2 == 0 {
                    host.extend_from_slice(b":8080");
                }
                let mut changed = host.clone();
                if let Some((at, byte)) = change {
                    let len = changed.len();
                    changed[at % len] = byte;
                }
                let table = &tables[usize::from(other)];
                for host in [host, changed] {
                    let remembered = memo.resolve(table, &host);
                    let looked_up = table.find(&host);
                    proptest::prop_assert_eq!(remembered.is_err(), looked_up.is_err(), "{:?}", host);
                    proptest::prop_assert_eq!(leads(remembered.ok().flatten()), leads(looked_up.ok().flatten()), "{:?}", host);
                }
            }
        }

        /// Folding case eight bytes at a time agrees with folding byte by byte, for any bytes.
        #[test]
        fn fold_case_matches_bytewise(bytes in proptest::array::uniform8(proptest::num::u8::ANY)) {
            let mut expected = bytes;
            expected.make_ascii_lowercase();
            proptest::prop_assert_eq!(fold_case(u64::from_le_bytes(bytes)).to_le_bytes(), expected);
        }

        /// A name's hash ignores the case of its letters, for any bytes; and the word compares
        /// agree with comparing bytes.
        #[test]
        fn the_hash_ignores_case(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..=SHORT_NAME + 8)) {
            let lower = bytes.to_ascii_lowercase();
            proptest::prop_assert!(eq_bytes(&bytes, &bytes));
            proptest::prop_assert_eq!(eq_bytes(&bytes, &lower), bytes == lower);
            proptest::prop_assert!(!eq_bytes(&bytes, &bytes[..bytes.len().saturating_sub(1)]) || bytes.is_empty());
            proptest::prop_assert_eq!(hash_host(&bytes), hash_host(&lower));
            proptest::prop_assert_eq!(hash_name::<true>(&bytes), hash_name::<false>(&lower));
            proptest::prop_assert!(eq_folded(&lower, &bytes));
        }

        /// A routed name is found in any case, and no other name is: not even one whose hash is
        /// the same because a byte that is not a letter differs in bit 5 only (`-` and CR, `_`
        /// and DEL, `)` and tab), whatever the length, among enough other names that probes
        /// pass over them.
        #[test]
        fn only_the_name_in_any_case_is_found(name in "[a-z0-9_)-]{1,40}(\\.[a-z0-9_-]{1,8})?", upper in proptest::collection::vec(proptest::bool::ANY, 0..50), at in proptest::num::usize::ANY, flip in proptest::prop_oneof![proptest::strategy::Just(0x20u8), proptest::num::u8::ANY]) {
            let mut b = RouteTable::builder();
            for i in 0..600 {
                b.route(&format!("n{i}.localhost"), Target::Instance(None));
            }
            b.set_upstream(0, Some(upstream("x")));
            b.route(&name, Target::Instance(Some(0)));
            let t = b.build();
            let mixed: Vec<u8> = name.bytes().zip(upper.iter().chain(std::iter::repeat(&false))).map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c }).collect();
            proptest::prop_assert!(matches!(t.lookup(&mixed), Some(Route::Instance(Some(_)))), "{:?}", mixed);
            let mut changed = mixed.clone();
            let len = changed.len();
            changed[at % len] ^= flip;
            let expected = changed.eq_ignore_ascii_case(name.as_bytes());
            let found = matches!(t.lookup(&changed), Some(Route::Instance(Some(_))));
            proptest::prop_assert_eq!(found, expected, "{:?}", changed);
        }

        /// Every host leads to the incarnation its slot holds in the same table, whatever the
        /// order of routes, unroutes and changes of incarnation, within an edit and across
        /// edits; and a table, once built, answers as it did when later edits change what it
        /// shares with them. Slots are led to by many hosts here (their places in several
        /// parts), and by one, as the controller routes them.
        #[test]
        fn hosts_lead_to_their_slots_incarnation(steps in proptest::collection::vec((0u8..6, 0u32..200, 0usize..6), 1..400)) {
            #[derive(Clone, Copy, Debug, PartialEq)]
            enum Leads { Slot(usize), Stopped, Group }
            let name = |n: u32| format!("host-{n}.localhost");
            let answer = |t: &RouteTable, n: u32| match t.lookup(name(n).as_bytes()) {
                None => "none".to_string(),
                Some(Route::Group(_)) => "group".to_string(),
                Some(Route::Instance(None)) => "stopped".to_string(),
                Some(Route::Instance(Some(r))) => {
                    assert!(std::ptr::eq(r.meter, &*r.upstream.meter));
                    format!("{} {:p}", r.slot, r.upstream)
                }
            };
            let mut hosts = std::collections::BTreeMap::new();
            let mut slots: Vec<Option<Arc<Upstream>>> = vec![None; 6];
            let mut b = RouteTable::builder();
            let mut built: Vec<(RouteTable, Vec<String>)> = Vec::new();
            for (op, n, slot) in steps {
                match op {
                    0 | 1 => {
                        b.route(&name(n), Target::Instance(Some(slot)));
                        hosts.insert(n, Leads::Slot(slot));
                    }
                    2 => {
                        let up = (slot % 2 == 0).then(|| upstream("x"));
                        b.set_upstream(slot, up.clone());
                        slots[slot] = up;
                    }
                    3 => match slot {
                        0 => {
                            b.route(&name(n), Target::Instance(None));
                            hosts.insert(n, Leads::Stopped);
                        }
                        1 => {
                            b.route(&name(n), Target::Group(GroupRoute { members: Box::new([0]), balance: Balance::RoundRobin }));
                            hosts.insert(n, Leads::Group);
                        }
                        _ => proptest::prop_assert_eq!(b.unroute(&name(n)), hosts.remove(&n).is_some()),
                    },
                    _ => {
                        let t = b.build();
                        let answers: Vec<String> = (0..200).map(|n| answer(&t, n)).collect();
                        b = t.edit();
                        built.push((t, answers));
                    }
                }
            }
            built.push((b.build(), Vec::new()));
            let (last, _) = built.last().unwrap();
            for n in 0..200 {
                let expected = match hosts.get(&n) {
                    None => "none".to_string(),
                    Some(Leads::Group) => "group".to_string(),
                    Some(Leads::Stopped) => "stopped".to_string(),
                    Some(Leads::Slot(s)) => match &slots[*s] {
                        Some(up) => format!("{s} {:p}", Arc::as_ptr(up)),
                        None => "stopped".to_string(),
                    },
                };
                proptest::prop_assert_eq!(answer(last, n), expected, "host-{}", n);
            }
            for (t, answers) in &built[..built.len() - 1] {
                for n in 0..200 {
                    proptest::prop_assert_eq!(&answer(t, n), &answers[n as usize], "host-{} in an earlier table", n);
                }
            }
        }


        /// Routing and unrouting in any order leaves the table answering as a map of the same
        /// changes: every routed name found with its target, every other one not, and its
        /// count right (the parts' places fill, wrap around their end and empty again, and a
        /// removal moves back the names after it).
        #[test]
        fn routes_follow_a_map_of_the_same_changes(steps in proptest::collection::vec((0u32..1500, proptest::option::of(0u32..4)), 1..4000)) {
            let mut model = std::collections::BTreeMap::new();
            let mut b = RouteTable::builder();
            let name = |n: u32| format!("host-{n}.localhost");
            for (n, to) in steps {
                match to {
                    Some(slot) => {
                        b.route(&name(n), Target::Instance(Some(slot as usize)));
                        model.insert(n, slot as usize);
                    }
                    None => proptest::prop_assert_eq!(b.unroute(&name(n)), model.remove(&n).is_some()),
                }
            }
            for slot in 0..4 {
                b.set_upstream(slot, Some(upstream("x")));
            }
            let t = b.build();
            proptest::prop_assert_eq!(t.len(), model.len());
            for n in 0..1500 {
                let found = match t.lookup(name(n).as_bytes()) {
                    Some(Route::Instance(Some(running))) => Some(running.slot),
                    None => None,
                    other => return Err(proptest::test_runner::TestCaseError::fail(format!("{n}: {:?}", leads(other)))),
                };
                proptest::prop_assert_eq!(found, model.get(&n).copied(), "host-{}", n);
            }
        }

        /// The port split by words answers as the byte-wise scan does, for any bytes, and for
        /// names with ports of any length and value.
        #[test]
        fn the_port_is_split_by_words_as_byte_by_byte(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..24), host in "[a-z0-9.:]{0,20}(:[0-9]{0,7})?") {
            for value in [&bytes[..], host.as_bytes()] {
                proptest::prop_assert_eq!(without_port(value), without_port_bytewise(value), "{:?}", value);
            }
        }

        /// The fast path (no validation of a routed name) answers as the checked path does, for
        /// routed names in any case, with or without ports, and for arbitrary hosts.
        #[test]
        fn find_agrees_with_the_checked_lookup(host in "(A\\.localhost|b|Instance-517\\.LocalHost|[a-zA-Z0-9.:\\[\\]%@ -]{0,12})(:[0-9]{0,6}|:[a-z]{1,2})?\\.?(:[0-9]{1,5})?") {
            let mut b = RouteTable::builder();
            for name in ["a.localhost", "b", "instance-517.localhost"] {
                let slot = b.upstream(upstream(name));
                b.route(name, Target::Instance(Some(slot)));
            }
            let t = b.build();
            let checked = host_name(host.as_bytes()).map(|n| leads(t.index_of(n).and_then(|(part, slot)| t.route_of(part, slot))));
            let found = t.find(host.as_bytes()).map(leads);
            proptest::prop_assert_eq!(found, checked, "{}", host);
        }

        /// The two 16-byte compares of a name's ends answer as four words do (the compare
        /// of targets without SSE2), exactly and with bit 5 ignored.
        #[test]
        fn the_ends_compare_as_words(name in proptest::collection::vec(proptest::num::u8::ANY, 16..=SHORT_NAME), changes in proptest::collection::vec((0usize..SHORT_NAME, 0u8..3, proptest::num::u8::ANY), 0..3)) {
            let mut key = name.clone();
            for (at, how, byte) in changes {
                let i = at % key.len();
                key[i] = match how {
                    0 => byte,
                    1 => key[i] ^ 0x20,
                    _ => key[i] ^ (byte & 0xdf),
                };
            }
            let words = Words::of(&key);
            // SAFETY: 16 to SHORT_NAME bytes.
            let ends = unsafe { Ends::of(&name) };
            for ignored in [0, 0x20] {
                proptest::prop_assert_eq!(
                    ends.same_but(&words, ignored),
                    same_words_but(&short_words(&name), &words, ignored)
                );
            }
            proptest::prop_assert_eq!(ends.are(&words), name == key);
        }

        /// A routed name with one byte changed to any other is found exactly when the change
        /// is a letter's case, whatever the name's length (read as its two ends, as four
        /// words, or byte by byte), with a port or not, among names of the same length.
        #[test]
        fn one_byte_changed_is_found_only_in_other_case(len in 1usize..48, at in 0usize..48, byte in proptest::num::u8::ANY, how in 0..3, port in proptest::bool::ANY) {
            let names: Vec<String> = (0..40)
                .map(|i| format!("{i:02}-{}", "a-b_c.d~e".repeat(6))[..len.max(2)].to_owned())
                .collect();
            let mut b = RouteTable::builder();
            for name in &names {
                b.route(name, Target::Instance(None));
            }
            let t = b.build();
            let name = &names[at % names.len()];
            let mut host = name.clone().into_bytes();
            let i = at % host.len();
            // Any byte; the byte with bit 5 flipped (the case of a letter, else another
            // character a compare that ignores case might take for it); the byte in upper case.
            host[i] = match how {
                0 => byte,
                1 => host[i] ^ 0x20,
                _ => host[i].to_ascii_uppercase(),
            };
            // Found: a well-formed host that is a routed name but for case (and a trailing dot).
            let bare = host.strip_suffix(b".").unwrap_or(&host);
            let expected = host_name(&host).is_ok()
                && names.iter().any(|n| n.strip_suffix('.').unwrap_or(n).as_bytes().eq_ignore_ascii_case(bare));
            if port {
                host.extend_from_slice(b":8080");
            }
            proptest::prop_assert_eq!(t.lookup(&host).is_some(), expected, "{:?}", String::from_utf8_lossy(&host));
        }

        /// A host is found whatever its case and port, and only names that were routed are found.
        #[test]
        fn lookup_is_case_insensitive(name in "[a-z0-9-]{1,40}(\\.[a-z0-9-]{1,20}){0,3}", upper in proptest::collection::vec(proptest::bool::ANY, 0..100), other in "[a-zA-Z0-9.-]{1,60}") {
            let mut b = RouteTable::builder();
            b.route(&name, Target::Instance(None));
            let t = b.build();
            let mixed: String = name.chars().zip(upper.iter().chain(std::iter::repeat(&false))).map(|(c, u)| if *u { c.to_ascii_uppercase() } else { c }).collect();
            proptest::prop_assert!(t.lookup(mixed.as_bytes()).is_some());
            let with_port = format!("{mixed}:8080");
            proptest::prop_assert!(t.lookup(with_port.as_bytes()).is_some());
            let expected = other.strip_suffix('.').unwrap_or(&other).eq_ignore_ascii_case(&name);
            proptest::prop_assert_eq!(t.lookup(other.as_bytes()).is_some(), expected);
        }
    }

    #[test]
    fn ipv6_literal_keeps_brackets() {
        assert_eq!(host_name(b"[::1]:8080"), Ok(&b"[::1]"[..]));
        assert_eq!(host_name(b"[::1]"), Ok(&b"[::1]"[..]));
        assert_eq!(host_name(b"host:80"), Ok(&b"host"[..]));
        assert_eq!(
            host_name(b"host:"),
            Ok(&b"host"[..]),
            "RFC 3986: the port may be empty"
        );
    }

    #[test]
    fn malformed_hosts_are_refused() {
        for bad in [
            &b""[..],
            b":80",
            b"x:abc",
            b"x:65536",
            b"x:1:2",
            b"a b",
            b"a/b",
            b"a@b",
            b"[::1",
            b"[::1]x",
            b"[zz]",
        ] {
            assert_eq!(
                host_name(bad),
                Err(BadHost),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Names as operators make them (a prefix and a number under one domain, short and long)
    /// spread over the parts, the largest holding at most twice its share, and over each part's
    /// places: a routed name is found in at most 1.2 times the probes a uniform hash needs at the
    /// same loads (linear probing: (1 + 1/(1 - load)) / 2 on average). A hash that left some of
    /// a name's bytes out would crowd such names together.
    #[test]
    fn numbered_names_spread_over_parts_and_places() {
        for pattern in [
            "instance-#.localhost",
            "#.svc.example.com",
            "a#b.io",
            "tenant-#-web.apps.internal.example.org",
            "#.io",
        ] {
            let names: Vec<String> = (0..20_000)
                .map(|i| pattern.replace('#', &i.to_string()))
                .collect();
            let mut b = RouteTable::builder();
            for name in &names {
                b.route(name, Target::Instance(None));
            }
            let table = b.build();
            let most = *table.lens.iter().max().unwrap() as usize;
            assert!(
                most * SHARDS <= 2 * names.len(),
                "{pattern}: {most} names in one part"
            );
            let mut probes = 0;
            for name in &names {
                let hash = hash_host(name.as_bytes());
                let places = &table.places[shard_of(hash)];
                let at = place_of(places, name.as_bytes(), hash).expect("routed");
                // The places from its home to where it is, both included.
                probes += (at.wrapping_sub(home(places, hash)) & (places.len() - 1)) + 1;
            }
            let uniform: f64 = (0..SHARDS)
                .map(|p| {
                    let n = f64::from(table.lens[p]);
                    let load = n / table.places[p].len() as f64;
                    n * (1.0 + 1.0 / (1.0 - load)) / 2.0
                })
                .sum();
            assert!(
                probes as f64 <= 1.2 * uniform,
                "{pattern}: {probes} probes, {uniform:.0} for a uniform hash"
            );
        }
    }

    /// Issue 16: an edit copies only the parts it changes, leaves the table it started from as
    /// it was, and a removed host's place is reused.
    #[test]
    fn an_edit_shares_what_it_does_not_change() {
        let mut b = RouteTable::builder();
        for i in 0..10_000 {
            b.route(&format!("i{i}.localhost"), Target::Instance(None));
        }
        let before = b.build();
        assert_eq!(before.len(), 10_000);

        let mut edit = before.edit();
        let slot = 7;
        edit.set_upstream(slot, Some(upstream("new")));
        edit.route("I42.localhost", Target::Instance(Some(slot)));
        assert!(edit.unroute("i43.localhost"));
        assert!(!edit.unroute("nobody.localhost"));
        edit.route("new.localhost", Target::Instance(None));
        let after = edit.build();

        let copied = before
            .places
            .iter()
            .zip(after.places.iter())
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert!((1..=3).contains(&copied), "{copied} parts copied");
        assert_ne!(before.generation(), after.generation());
        // The old table is as it was.
        assert!(matches!(
            before.lookup(b"i42.localhost"),
            Some(Route::Instance(None))
        ));
        assert!(before.lookup(b"i43.localhost").is_some());
        assert!(before.lookup(b"new.localhost").is_none());
        assert!(before.upstream(slot).is_none());
        // The new one has the changes, and only those.
        assert!(matches!(
            after.lookup(b"i42.localhost:80"),
            Some(Route::Instance(Some(Running { slot: 7, .. })))
        ));
        assert_eq!(after.upstream(slot).map(|u| &*u.name), Some("new"));
        assert!(after.lookup(b"i43.localhost").is_none());
        assert!(after.lookup(b"new.localhost").is_some());
        assert!(matches!(
            after.lookup(b"i9999.localhost"),
            Some(Route::Instance(None))
        ));
        assert_eq!(after.len(), 10_000);
        assert_eq!(after.upstreams().len(), 8);
        // A memo made in the old table is not used in the new one.
        let mut memo = RouteMemo::default();
        assert!(matches!(
            memo.resolve(&before, b"i42.localhost"),
            Ok(Some(Route::Instance(None)))
        ));
        assert!(matches!(
            memo.resolve(&after, b"i42.localhost"),
            Ok(Some(Route::Instance(Some(Running { slot: 7, .. }))))
        ));

        // A group's place in its part is reused once no host leads to it: the part's groups do
        // not grow, whether the host is removed or routed to an instance instead.
        let group = |members: &[usize]| {
            Target::Group(GroupRoute {
                members: members.into(),
                balance: Balance::RoundRobin,
            })
        };
        let mut edit = after.edit();
        edit.route("i42.localhost", group(&[7]));
        let grouped = edit.build();
        let p = shard_of(hash_host(b"i42.localhost"));
        let groups = grouped.groups[p].groups.len();
        assert!(matches!(
            grouped.lookup(b"i42.localhost"),
            Some(Route::Group(g)) if *g.members == [7]
        ));
        let mut edit = grouped.edit();
        assert!(edit.unroute("i42.localhost"));
        edit.route("i42.localhost", group(&[1, 2]));
        let again = edit.build();
        assert_eq!(again.groups[p].groups.len(), groups);
        assert!(matches!(
            again.lookup(b"i42.localhost"),
            Some(Route::Group(g)) if *g.members == [1, 2]
        ));
        let mut edit = again.edit();
        edit.route("i42.localhost", Target::Instance(Some(7)));
        edit.route("i42.localhost", group(&[3]));
        let last = edit.build();
        assert_eq!(last.groups[p].groups.len(), groups);
        assert!(matches!(
            last.lookup(b"i42.localhost"),
            Some(Route::Group(g)) if *g.members == [3]
        ));
        // The tables before are as they were.
        assert!(matches!(
            again.lookup(b"i42.localhost"),
            Some(Route::Group(g)) if *g.members == [1, 2]
        ));
        assert!(matches!(
            after.lookup(b"i42.localhost"),
            Some(Route::Instance(Some(Running { slot: 7, .. })))
        ));
    }
}
