use diesel_workspace::tenant_table;

tenant_table! {
    notes (id) {
        id -> Int4,
    }

    tags (id) {
        id => Int4,
    }
}

fn main() {}
