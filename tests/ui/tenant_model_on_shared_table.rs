use diesel::prelude::*;
use diesel_workspace::TenantModel;

diesel::table! {
    public.users (id) {
        id -> Int4,
        name -> Text,
    }
}

#[derive(Queryable, TenantModel)]
#[diesel(table_name = users)]
struct User {
    id: i32,
    name: String,
}

fn main() {}
