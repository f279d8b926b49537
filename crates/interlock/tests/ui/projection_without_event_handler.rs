use interlock::prelude::*;

#[derive(Query)]
#[query(output = u64)]
struct Total;

#[derive(Default)]
struct Totals {
    total: u64,
}

#[projection(resettable)]
impl Totals {
    #[handles_query]
    fn total(&self, _: Total) -> Result<String, HandlerError> {
        Ok(self.total.to_string())
    }
}

fn main() {}
