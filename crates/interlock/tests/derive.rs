//! `#[derive(Command)]`, `#[derive(Query)]` and `#[derive(Event)]` through the facade.

use interlock::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Command, Serialize, Deserialize)]
struct ByUuid {
    aggregate_id: Uuid,
}

#[derive(Command, Serialize, Deserialize)]
#[command(output = String, name = "Renamed.ByString")]
struct ByString {
    aggregate_id: String,
}

#[derive(Command, Serialize, Deserialize)]
#[command(output = Vec<u64>)]
struct ByMarkedU64 {
    // A field named `aggregate_id` loses to the marked one.
    aggregate_id: String,
    #[command(aggregate_id)]
    account: u64,
}

#[derive(Command, Serialize, Deserialize)]
struct Tuple(#[command(aggregate_id)] String, u32);

#[derive(Command, Serialize, Deserialize)]
#[command(output = T)]
struct Generic<T: Send + 'static> {
    aggregate_id: u64,
    value: T,
}

#[derive(Event, Serialize, Deserialize)]
struct Plain {
    n: u32,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "Legacy.Name", version = 3)]
struct Versioned {
    n: u32,
}

#[derive(Event, Serialize, Deserialize)]
enum Changed {
    Up(u32),
    Down(u32),
}

#[derive(Event, Serialize, Deserialize)]
struct Wrapped<T> {
    inner: T,
}

#[derive(Query)]
#[query(output = Option<u64>)]
struct Balance {
    _account: Uuid,
}

#[derive(Query)]
#[query(output = Vec<String>, name = "Owners")]
struct AllOwners;

fn same_type<A: 'static, B: 'static>() -> bool {
    std::any::TypeId::of::<A>() == std::any::TypeId::of::<B>()
}

#[test]
fn command_type_names_default_to_the_struct_name() {
    assert_eq!(ByUuid::TYPE_NAME, "ByUuid");
    assert_eq!(ByString::TYPE_NAME, "Renamed.ByString");
    assert_eq!(<Generic<u8> as Command>::TYPE_NAME, "Generic");
}

#[test]
fn command_outputs_default_to_unit() {
    assert!(same_type::<<ByUuid as Command>::Output, ()>());
    assert!(same_type::<<ByString as Command>::Output, String>());
    assert!(same_type::<<ByMarkedU64 as Command>::Output, Vec<u64>>());
    assert!(same_type::<<Generic<i8> as Command>::Output, i8>());
}

#[test]
fn aggregate_ids_come_from_uuid_string_and_integer_fields() {
    let uuid = Uuid::now_v7();
    assert_eq!(
        ByUuid { aggregate_id: uuid }.aggregate_id(),
        AggregateId::from(uuid)
    );
    assert_eq!(
        ByString {
            aggregate_id: "acc-1".into()
        }
        .aggregate_id()
        .as_str(),
        "acc-1"
    );
    let marked = ByMarkedU64 {
        aggregate_id: "ignored".into(),
        account: 42,
    };
    assert_eq!(marked.aggregate_id().as_str(), "42");
    assert_eq!(Tuple("t-1".into(), 0).aggregate_id().as_str(), "t-1");
    let generic = Generic {
        aggregate_id: 7,
        value: String::from("x"),
    };
    assert_eq!(generic.aggregate_id().as_str(), "7");
    let _ = (generic.value, Tuple(String::new(), 1).1);
}

#[test]
fn event_names_and_versions() {
    assert_eq!((Plain::TYPE_NAME, Plain::SCHEMA_VERSION), ("Plain", 1));
    assert_eq!(
        (Versioned::TYPE_NAME, Versioned::SCHEMA_VERSION),
        ("Legacy.Name", 3)
    );
    assert_eq!(Changed::TYPE_NAME, "Changed");
    assert_eq!(<Wrapped<u32> as Event>::TYPE_NAME, "Wrapped");
    let _ = (
        Plain { n: 0 }.n,
        Versioned { n: 0 }.n,
        Changed::Up(1),
        Changed::Down(1),
    );
}

#[test]
fn query_names_and_outputs() {
    assert_eq!(Balance::TYPE_NAME, "Balance");
    assert_eq!(AllOwners::TYPE_NAME, "Owners");
    assert!(same_type::<<Balance as Query>::Output, Option<u64>>());
    assert!(same_type::<<AllOwners as Query>::Output, Vec<String>>());
}
