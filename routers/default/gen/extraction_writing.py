"""extraction, writing and roleplay prompts in benchmark shapes, written for this project."""

EXTRACTION = [
    """From the job posting below, extract the job title, location, salary range and years of experience required. Return JSON.

Posting: Brightwater Analytics is hiring a Senior Data Engineer for its Leeds office (hybrid, 3 days on site). You will own our ingestion pipelines. We are looking for 5+ years with Spark or Flink. Salary: GBP 68,000-80,000 plus bonus.""",
    """List every date in this paragraph together with the event it refers to, one per line as "date: event".

The bridge was commissioned on 3 May 1931, opened to traffic on 19 October 1934 and closed for repairs between March 1977 and June 1979. It was finally listed as a heritage structure in 2002.""",
    """Here are three product blurbs. Build a table with columns name, price, weight and battery life.
1) The TrailLite X headlamp weighs 86 g, runs 40 hours on one charge and costs $39.
2) For $129, the Summit GPS watch lasts 14 days and weighs 52 g.
3) Our CampCharge power bank (310 g) costs $59; battery life does not apply.""",
    """Find all email addresses and phone numbers in the text below and return them as two lists.

Contact Mara at mara.k@kestrel.io or +44 20 7946 0123. For billing, write to accounts@kestrel.io; urgent issues: 0800 123 456.""",
    """Read the meeting notes and return the action items as a JSON array of {owner, task, due}.

Notes 12 Feb: Priya will send the revised budget by Friday. Tom to book the venue for the offsite (before end of month). Everyone should review the hiring plan; Lee collects comments by 20 Feb.""",
    """Assign each headline to one of these sections: Sports, Politics, Technology, Health. Answer as "number: section".
1. Parliament votes down the housing bill for a second time
2. New chip promises twice the battery life for laptops
3. Underdogs reach the cup final after penalty shootout
4. Study links short naps to better memory in older adults""",
    """Classify the sentiment of each customer comment as positive, negative or neutral. Output a JSON object mapping the comment number to the label.
1. "Arrived a day early and works perfectly."
2. "The strap broke after a week. Not buying again."
3. "It's a phone case. It does the job."
4. "Customer service sorted my refund within an hour, impressed!\"""",
    """Extract the ingredients and their quantities from this recipe into a YAML list.

Whisk 3 eggs with 250 ml milk and a pinch of salt. Fold in 120 g flour and 30 g melted butter, then rest the batter for 20 minutes before frying.""",
    """Given this invoice text, return the vendor, invoice number, total amount and due date as key: value lines.

INVOICE #INV-20931 - Larchmont Office Supply, 14 Elm Rd. Items: toner x2 (84.00), paper x10 (45.50). Subtotal 129.50, VAT 25.90, TOTAL 155.40. Payment due 30 days from 01/03/2025.""",
    """Identify the people, organizations and places mentioned in this press release and return a JSON dictionary with one list per entity type.

Nairobi, 4 June - Solara Energy and the Kenya Power Authority signed an agreement to build a 50 MW solar farm near Garissa. CEO Wanjiru Otieno said construction will start in September, with financing from the African Development Bank.""",
    """Using the CSV below, which city had the highest average temperature in July, and what was it?

city,month,avg_temp_c
Seville,July,28.2
Athens,July,28.9
Palermo,July,26.4
Athens,January,10.1""",
    """Count how many times the words "data", "model" and "user" appear in the paragraph below. Show "word: count" lines sorted by count.

The model reads user data, and each user can delete their data. When the model is retrained, old data is dropped, so a user never sees a model built on data they removed.""",
    """Pull out the title, director and release year of each film mentioned here, as a CSV with a header row.

Last night we rewatched "Spirited Away" (Hayao Miyazaki, 2001) and then argued about whether Bong Joon-ho's "Parasite" from 2019 or Agnes Varda's 1962 "Cleo from 5 to 7" is the better film.""",
    """Extract every monetary amount and what it was spent on from this expense note. Return JSON.

Taxi from airport 42.80, hotel two nights 310.00, team dinner 186.45 (4 people), conference fee 450, parking 12.""",
    """From the following patient note, extract age, sex, symptoms, current medications and allergies as structured fields. Do not add anything that is not stated.

54-year-old female with 3 days of productive cough and low-grade fever. Takes lisinopril 10 mg daily. Allergic to penicillin (rash).""",
    """Below are four support tickets. For each, extract the product, the problem and the urgency (low/medium/high) stated by the customer.

#881 "My Nimbus router drops Wi-Fi every evening, not urgent."
#882 "URGENT: checkout page on the Orbit store returns error 500!"
#883 "Orbit app crashes when I upload photos, fix when you can."
#884 "Nimbus firmware update bricked the device, we are offline, please help now\"""",
    """Read these equations and extract the unique variable names from each one. Return a JSON object keyed by equation number.
1) F = G * m1 * m2 / r^2
2) PV = nRT
3) v_final = v_initial + a * t""",
    """Convert the following unstructured address block into fields (name, street, city, postcode, country):

Dr. Ingrid Halvorsen, Storgata 14B, 0184 Oslo, Norway""",
    """Here is a paragraph from a quarterly report. Extract the revenue, operating profit and headcount for each of the two quarters and present them in a markdown table.

In Q1 revenue reached 12.4 million euros with an operating profit of 1.1 million, and we ended the quarter with 212 employees. Q2 revenue grew to 13.9 million, operating profit to 1.6 million, while headcount rose to 230.""",
    """From the product reviews below, give each laptop an overall score out of 10 based only on what the reviewers say, and return JSON.
- Aero 14: "Gorgeous screen, battery is mediocre, keyboard a bit shallow."
- Kinetic Pro: "Fast, cool and quiet. Pricey but worth it."
- Basalt 15: "Heavy and loud fans, but unbeatable price.\"""",
    ("follow", "Extract the names and ages from this sentence: 'Ana (34) met her cousins Luis, 29, and Marta, 41, in Porto.'", "Now give it as CSV instead, oldest first."),
    ("follow", "List the countries and their capitals mentioned in: 'We flew from Canberra to Wellington, then on to Santiago, Chile.'", "Add a column with each country's currency."),
    ("follow", "Return the key facts in this sentence as JSON: 'The museum, founded in 1889 in Glasgow, holds 9,000 paintings.'", "Only keep numeric fields."),
]

WRITING = [
    "Write a travel blog post about a week of hiking in the Dolomites, with practical tips and a couple of vivid scenes.",
    "Draft a professional email asking my manager for feedback on the quarterly report I sent last week.",
    "Write a persuasive op-ed arguing that cities should make public transit free for students.",
    "Compose a short story that starts with the sentence: 'The lighthouse keeper had not seen a ship in eleven years.'",
    "Write a sonnet about the last day of summer.",
    "Write a product description for a handmade ceramic teapot for an online shop, under 120 words.",
    "Write a wedding toast for my sister that is funny but not embarrassing.",
    "Draft a cover letter for a junior graphic designer position at a small studio.",
    "Write a 300-word piece describing a busy night market using all five senses.",
    "Write a eulogy for a beloved high-school chemistry teacher.",
    "Write a newsletter intro announcing that our bookshop is moving to a bigger space.",
    "Write a limerick about a cat who learned to use the printer.",
    "Write a motivational speech for a youth soccer team before the final.",
    "Compose a haiku sequence about commuting in the rain.",
    "Write an engaging opening paragraph for an article on the history of coffee houses.",
    ("follow", "Write a short poem about a harbour at night.", "Rewrite it so that every line starts with the letter F."),
    ("follow", "Draft an apology email to a customer whose order arrived damaged.", "Make it shorter and warmer in tone."),
    ("follow", "Write a blog post about learning to bake sourdough.", "Now summarize your post in three tweets."),
    ("follow", "Write a fairy tale about a clockmaker and a dragon.", "Give it a different ending where the dragon wins."),
    ("follow", "Write a speech for a retirement party.", "Rewrite your previous answer in the style of Shakespeare."),
]

ROLEPLAY = [
    "Pretend you are Marie Curie for the rest of this conversation. What keeps you going in the lab on difficult days?",
    "Embrace the role of Sherlock Holmes. Deduce what you can about me from the fact that I type fast and apologize often.",
    "Imagine yourself as a lighthouse that has stood on the same cliff for 200 years. Describe a storm from your point of view.",
    "Please assume the role of a strict but fair driving instructor. I just ran a yellow light.",
    "Now you are a senior software architect interviewing me for a job. Ask me your first question.",
    "Act as a medieval innkeeper. A tired traveller (me) walks in asking for a room and a meal.",
    "You are Captain Nemo aboard the Nautilus. Tell your guest why you left the surface world.",
    "Take on the persona of a sarcastic robot butler and respond to my request to bring tea.",
    "Let's play a game: you are a fortune teller at a fair, and I am a skeptical customer. Begin.",
    "Be my personal fitness coach. I want to run a half marathon in 12 weeks; talk to me like a coach would.",
    "Roleplay as a 1920s jazz musician being interviewed about the new sound.",
    "You are a grumpy cat who has just been told the family is getting a dog. Stay in character.",
    "Please act as my career mentor. I have two job offers and can't decide.",
    "Pretend to be Albert Einstein and explain to a child why the sky is blue, in your own voice.",
    "Act as a tour guide in ancient Rome and lead me through the Forum.",
    "From now on you are Gandalf. Answer my questions as he would.",
    "You are a customer support agent for a space hotel. I'd like to complain about the gravity in my room.",
    "Assume the role of a negotiation partner selling me a used car; I will try to get a better price.",
    "Imagine you are a detective in 1940s Los Angeles. Narrate your first day on a new case.",
    "Please pretend to be a translator who corrects and improves whatever I write into polished English. My first sentence: 'yesterday I go to market and buyed many fruit'.",
    ("follow", "Pretend you are a pirate captain for the rest of our chat.", "What do you think of the navy?"),
    ("follow", "Act as my Spanish tutor and only reply in simple Spanish.", "How was your weekend?"),
    ("follow", "You are Cleopatra. Greet your visitor from Rome.", "Why should Rome trust Egypt?"),
    ("follow", "Play the role of a wise old tree in a forest.", "Do you ever get lonely?"),
]

ITEMS = {"extraction": EXTRACTION, "writing": WRITING, "roleplay": ROLEPLAY}
