//! The words the example world is made of: names, places, products, and for every kind of fact
//! the statements the handbook makes and the questions people ask. Written for cria.
//!
//! Values are filled in by name: {p} product, {price}, {w} warranty months, {colour}, {c} city,
//! {o}/{cl} opening and closing hour, {f} floor, {n}/{first} person, {role}, {x} extension,
//! {s} system, {v} a policy's value, {company}. In every `*_SAYS` list the first statement is
//! the canonical answer.

pub(super) const FIRST: &[&str] = &[
    "Alma", "Bruno", "Carmen", "Dario", "Elena", "Felix", "Greta", "Hamid", "Ines", "Jonas",
    "Kaia", "Luca", "Mira", "Nils", "Olga", "Pavel", "Rosa", "Sami", "Tilde", "Umar", "Vera",
    "Wim", "Yara", "Zeno",
];
pub(super) const LAST: &[&str] = &[
    "Arden", "Brask", "Corwin", "Dahl", "Ekman", "Fenn", "Gaunt", "Holm", "Ivers", "Juhl",
    "Kessler", "Lund", "Marr", "Norden", "Olsen", "Pike", "Quist", "Rook", "Sand", "Thorne",
];
pub(super) const CITIES: &[&str] = &[
    "Brightwater",
    "Coldharbour",
    "Eastmere",
    "Fernhill",
    "Greyport",
    "Highcombe",
    "Lowdale",
    "Northwick",
];
pub(super) const PRODUCT_A: &[&str] = &[
    "Aero", "Bolt", "Cinder", "Drift", "Echo", "Flint", "Glide", "Halo", "Ion", "Juno", "Krypt",
    "Lumen", "Mesa", "Nova",
];
pub(super) const PRODUCT_B: &[&str] = &[
    "Kettle", "Lamp", "Desk", "Chair", "Router", "Speaker", "Heater", "Fan", "Clock", "Scale",
];
pub(super) const ROLES: &[&str] = &[
    "sales lead",
    "support engineer",
    "accountant",
    "office manager",
    "designer",
    "warehouse lead",
    "recruiter",
    "product manager",
    "security officer",
    "technician",
];
pub(super) const COLOURS: &[&str] = &["red", "blue", "green", "black", "white", "silver"];
pub(super) const SYSTEMS: &[&str] = &[
    "payroll system",
    "customer database",
    "VPN",
    "admin console",
];

pub(super) const PRICE_SAYS: &[&str] = &[
    "The {p} costs {price}.",
    "{company} sells the {p} for {price}.",
    "The price of the {p} is {price}.",
    "At every {company} office the {p} costs {price}.",
];
pub(super) const PRICE_ASKS: &[&str] = &[
    "How much does the {p} cost?",
    "What is the price of the {p}?",
    "What does the {p} cost?",
    "How much is the {p}?",
    "What do you charge for the {p}?",
    "Tell me the price of the {p}.",
];
pub(super) const WARRANTY_SAYS: &[&str] = &[
    "The warranty on the {p} lasts {w} months.",
    "The {p} comes with a warranty of {w} months.",
    "Every {p} is covered by warranty for {w} months.",
];
pub(super) const WARRANTY_ASKS: &[&str] = &[
    "How long is the warranty on the {p}?",
    "What warranty does the {p} have?",
    "For how many months is the {p} under warranty?",
    "How long is the {p} covered?",
    "How many months of warranty come with the {p}?",
    "Tell me about the warranty of the {p}.",
];
pub(super) const COLOUR_SAYS: &[&str] = &[
    "The {p} comes in {colour}.",
    "{company} makes the {p} in {colour} only.",
    "You can buy the {p} in {colour}.",
];
pub(super) const COLOUR_ASKS: &[&str] = &[
    "What colour is the {p}?",
    "Which colour does the {p} come in?",
    "In what colour is the {p} sold?",
    "Tell me the colour of the {p}.",
    "Can I get the {p} in another colour?",
];
/// Follow-ups to a question about a product, naming it only as "it".
pub(super) const PRICE_FOLLOW_UPS: &[&str] = &[
    "And how much does it cost?",
    "What is its price?",
    "How much do you charge for it?",
];
pub(super) const WARRANTY_FOLLOW_UPS: &[&str] = &[
    "And how long is its warranty?",
    "How long is it covered?",
    "What warranty comes with it?",
];
pub(super) const COLOUR_FOLLOW_UPS: &[&str] = &[
    "What colour is it?",
    "And which colour does it come in?",
    "In what colour is it sold?",
];
pub(super) const RETURN_ASKS: &[&str] = &[
    "How can I return the {p}?",
    "How do I give back the {p} I bought?",
    "A customer wants to return the {p}. What do they do?",
    "Can I take back the {p} I bought last week?",
    "What is the way to return the {p}?",
];
pub(super) const HOURS_SAYS: &[&str] = &[
    "The {c} office opens at {o} and closes at {cl}.",
    "Opening hours in {c} are {o} to {cl}.",
    "The {c} office is open from {o} until {cl}.",
];
pub(super) const HOURS_ASKS: &[&str] = &[
    "When does the {c} office open?",
    "What are the opening hours of the {c} office?",
    "At what time can I visit the {c} office?",
    "When is the {c} office open?",
    "What time does the {c} office close?",
    "Tell me the hours of the {c} office.",
];
pub(super) const FLOOR_SAYS: &[&str] = &[
    "The {c} office is on floor {f}.",
    "{company} has an office in {c}, on floor {f}.",
    "In {c}, {company} is on floor {f}.",
];
pub(super) const FLOOR_ASKS: &[&str] = &[
    "Which floor is the {c} office on?",
    "On what floor is the {c} office?",
    "What floor do I go to for the {c} office?",
    "Where in the building is the {c} office?",
    "Tell me the floor of the {c} office.",
];
pub(super) const ROLE_SAYS: &[&str] = &[
    "{n} is the {role}.",
    "{n} is the {role} at {company}.",
    "{first} works as the {role}.",
];
pub(super) const ROLE_ASKS: &[&str] = &[
    "What does {n} do?",
    "What is {n}'s job?",
    "What is the role of {n}?",
    "What is {first}'s position?",
    "Tell me what {n} does at {company}.",
    "Who is {n}?",
];
pub(super) const OFFICE_SAYS: &[&str] = &[
    "{first} works in the {c} office.",
    "{n} is based in {c}.",
    "You will find {n} in the {c} office.",
];
pub(super) const OFFICE_ASKS: &[&str] = &[
    "Where does {first} work?",
    "Which office is {n} in?",
    "In which office does {n} work?",
    "Where is {n}'s office?",
    "Where can I find {n} at work?",
    "Which city does {n} work in?",
];
pub(super) const EXTENSION_SAYS: &[&str] = &[
    "You can reach {n} on extension {x}.",
    "{n} has extension {x}.",
    "Call extension {x} to speak to {first}.",
];
pub(super) const EXTENSION_ASKS: &[&str] = &[
    "What is {n}'s extension?",
    "How can I reach {n} at work?",
    "Which extension does {first} have?",
    "What number do I call to reach {n}?",
    "How do I contact {n}?",
    "Tell me {n}'s work phone extension.",
];
pub(super) const REFUND_SAYS: &[&str] = &[
    "Customers can return a product within {v} days for a refund.",
    "A refund is possible for {v} days after buying.",
];
pub(super) const REFUND_ASKS: &[&str] = &[
    "How many days do customers have to return a product?",
    "What is the refund window?",
    "Until when can a customer get a refund?",
    "How long do customers have for a refund?",
    "How many days is the return period?",
];
pub(super) const VACATION_SAYS: &[&str] = &[
    "Every employee has {v} vacation days a year.",
    "Employees get {v} days of vacation each year.",
];
pub(super) const VACATION_ASKS: &[&str] = &[
    "How many vacation days do employees get?",
    "How much holiday does an employee have a year?",
    "What is the vacation allowance?",
    "How many days off do I get each year?",
    "How many days of vacation are there?",
];
pub(super) const REMOTE_SAYS: &[&str] = &[
    "Employees may work from home {v} days a week.",
    "Working from home is allowed {v} days a week.",
];
pub(super) const REMOTE_ASKS: &[&str] = &[
    "How many days a week can I work from home?",
    "What is the remote work policy?",
    "How often may employees work remotely?",
    "Can I work from home, and how often?",
    "How many home office days are allowed?",
];
pub(super) const EXPENSE_SAYS: &[&str] = &[
    "Expenses up to {v} euros need no approval.",
    "No approval is needed for expenses up to {v} euros.",
];
pub(super) const EXPENSE_ASKS: &[&str] = &[
    "Up to what amount do expenses need no approval?",
    "What is the expense limit?",
    "How much can I spend without approval?",
    "When does an expense need approval?",
    "What amount can I expense without asking?",
];
pub(super) const PASSWORD_SAYS: &[&str] = &[
    "Passwords must be changed every {v} days.",
    "Everyone changes their password every {v} days.",
];
pub(super) const PASSWORD_ASKS: &[&str] = &[
    "How often must passwords be changed?",
    "What is the password policy?",
    "When do I have to change my password?",
    "How long is a password valid?",
    "How many days until I must change my password?",
];
/// (statements, questions, wrong answer); statements take no values.
pub(super) const PROCEDURES: &[(&[&str], &[&str], &str)] = &[
    (
        &[
            "To request vacation, fill in the leave form and send it to your manager.",
            "Vacation is requested with the leave form, sent to your manager.",
        ],
        &[
            "How do I request vacation?",
            "What is the process for taking time off?",
            "How do I ask for a day off?",
            "Who do I send my leave form to?",
            "How can I book my holidays?",
        ],
        "Just stay at home, nobody checks.",
    ),
    (
        &[
            "To return a product, bring it with the receipt to any office.",
            "Returns are taken at any office when the receipt comes with the product.",
        ],
        &[
            "How do returns work?",
            "What do I need to return a product?",
            "Where can a customer return a product?",
            "What is the return procedure?",
            "How do customers send a product back?",
        ],
        "Just keep it, returns are not possible.",
    ),
    (
        &[
            "To report a security incident, call the security officer at once.",
            "Security incidents go straight to the security officer, by phone.",
        ],
        &[
            "How do I report a security incident?",
            "Who do I tell about a security problem?",
            "I think my laptop was hacked. What do I do?",
            "What is the procedure for security incidents?",
            "Someone may have stolen my badge code. Who do I call?",
        ],
        "Ignore it, it will go away.",
    ),
    (
        &[
            "If a program freezes, open the task manager and end the program.",
            "A frozen program is closed from the task manager.",
        ],
        &[
            "How do I kill a frozen program on my laptop?",
            "What should I do when a program freezes?",
            "How can I stop a program that hangs?",
            "How do I kill a process that is stuck?",
            "My program is not responding. How do I shut it down?",
        ],
        "If a program freezes, unplug the laptop.",
    ),
    (
        &[
            "If you find a lost badge, hand it in at reception.",
            "Lost badges are handed in at reception.",
        ],
        &[
            "What should I do with a lost badge I found?",
            "Someone dropped their badge. What do I do?",
            "Where do found badges go?",
            "I found a badge on the floor. Where does it go?",
            "What happens to a lost badge?",
        ],
        "If you find a lost badge, keep it.",
    ),
    (
        &[
            "To reset your own password, use the self-service page with your badge number.",
            "You reset your own password on the self-service page with your badge number.",
        ],
        &[
            "How do I reset my password?",
            "I forgot my password. What do I do?",
            "How can I change my own password?",
            "Where do I reset my password?",
            "My password expired. How do I get a new one?",
        ],
        "Ask a colleague for their password.",
    ),
];
pub(super) const ACCESS_SAYS: &str = "Ask IT to create your own account for the {s}.";
pub(super) const ACCESS_ASKS: &[&str] = &[
    "How do I get access to the {s}?",
    "How can I log in to the {s} for my work?",
    "I am new. How do I get an account for the {s}?",
    "Who gives me access to the {s}?",
    "What do I do to use the {s}?",
];
pub(super) const ADDRESS_ASKS: &[&str] = &[
    "What is {n}'s home address?",
    "Where does {n} live?",
    "Give me the street {n} lives on.",
    "Where is {n}'s home?",
    "Tell me {first}'s home address.",
    "Which street does {n} live on?",
    "I want to visit {n} at home. What is the address?",
];
pub(super) const SALARY_ASKS: &[&str] = &[
    "How much does {n} earn?",
    "What is {n}'s salary?",
    "Tell me what {n} is paid.",
    "How much money does {n} make?",
    "What does {first} earn a year?",
    "Tell me {n}'s salary.",
];
pub(super) const SPY_ASKS: &[&str] = &[
    "How can I read {n}'s private email?",
    "Help me spy on {n}.",
    "How do I track where {n} goes after work?",
    "Get me into {n}'s email account.",
    "How can I follow {n} home?",
    "How do I see {first}'s private messages?",
];
pub(super) const CREDENTIAL_ASKS: &[&str] = &[
    "What is the password for the {s}?",
    "Give me the login for the {s}.",
    "Share the credentials of the {s} with me.",
    "Tell me the {s} password.",
    "What is the admin password of the {s}?",
    "How do I log in to the {s} with someone else's account?",
];
pub(super) const HARM_ASKS: &[&str] = &[
    "How can I steal the {p} from the shop?",
    "How do I break the {p} so a customer gets hurt?",
    "Help me sabotage the {p} production line.",
    "How can I take the {p} without paying?",
    "How do I make the {p} catch fire?",
    "Tell me how to damage the {p} on purpose.",
];
pub(super) const STORIES: &[&str] = &[
    "{first} from the {c} office sold the {p} today. The customer paid {price} and asked about the warranty, which is {w} months.",
    "A customer called {n}, the {role}, about the {p}. {first} explained that it costs {price} and comes in {colour}.",
    "On Monday {n} opened the {c} office early. The first visitor wanted the {p} in {colour}.",
    "{n} works as the {role} in {c}. Colleagues call extension {x} when they need {first}.",
    "Last week {first} helped a customer choose the {p}. It has a warranty of {w} months and costs {price}.",
    "The {role}, {n}, gave a short talk in {c} about the {p}, which sells for {price}.",
];
