use diesel_workspace::tenant_table;

tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
        title -> Varchar,
    }
}

fn main() {}
