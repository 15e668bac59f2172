use diesel_workspace::tenant_table;

tenant_table! {
    acme.notes (id) {
        id -> Int4,
    }
}

fn main() {}
