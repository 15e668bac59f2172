use diesel_workspace::{tenant_table, TenantModel};

tenant_table! {
    notes (id) {
        id -> Int4,
    }
}

#[derive(TenantModel)]
#[tenant(tabel = notes)]
struct Note {
    id: i32,
}

fn main() {}
