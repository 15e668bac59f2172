use diesel_workspace::tenant_table;

tenant_table! {
    seats (id) {
        id -> Int4,
        table -> Int4,
    }
}

fn main() {}
