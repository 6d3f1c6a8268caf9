"""A second batch across the categories, written for this project: more subjects in the
multiple-choice and short-answer shapes, more puzzle formats, more given-text tasks."""

STEM_MC = [
    ("clinical knowledge", "Which of these is the normal resting heart rate range for an adult?", ["20-40 beats/min",
     "60-100 beats/min", "120-160 beats/min", "180-200 beats/min"]),
    ("clinical knowledge", "When taking a blood pressure reading, the cuff should be placed", ["around the wrist only",
     "at heart level on the upper arm", "on the thigh while standing", "over thick clothing"]),
    ("medical genetics", "Down syndrome is most commonly caused by", ["a point mutation", "trisomy 21",
     "a deletion on chromosome 5", "mitochondrial inheritance"]),
    ("college medicine", "During intense exercise, lactic acid builds up in muscle because",
     ["oxygen supply limits aerobic respiration", "glucose runs out", "proteins are broken down", "the liver stops working"]),
    ("human aging", "Which change is a normal part of aging rather than a disease?", ["Alzheimer's disease",
     "Presbyopia (difficulty focusing on near objects)", "Stroke", "Type 1 diabetes"]),
    ("high school physics", "A car's speedometer reads a constant 60 km/h while it goes around a roundabout. The car is",
     ["not accelerating", "accelerating because its direction changes", "decelerating", "in equilibrium"]),
    ("conceptual physics", "Why does a metal spoon feel colder than a wooden spoon at the same temperature?",
     ["Metal is colder", "Metal conducts heat away from the hand faster", "Wood produces heat", "Metal reflects heat"]),
    ("high school chemistry", "Which of the following solutions has the lowest freezing point?", ["0.1 M glucose",
     "0.1 M NaCl", "0.1 M CaCl2", "pure water"]),
    ("high school biology", "Which structure is found in plant cells but not in animal cells?", ["Mitochondrion",
     "Cell wall", "Ribosome", "Nucleus"]),
    ("machine learning", "Which loss function is standard for multi-class classification with softmax outputs?",
     ["Mean squared error", "Cross-entropy", "Hinge loss only", "L1 loss"]),
    ("high school computer science", "What is the output of 7 // 2 in Python 3?", ["3.5", "3", "4", "2"]),
    ("college computer science", "Which scheduling policy can cause starvation?", ["Round robin", "Shortest job first",
     "First come first served", "Lottery with equal tickets"]),
    ("computer security", "A salt is added to passwords before hashing mainly to", ["make hashing faster",
     "defeat precomputed rainbow tables", "encrypt the password", "compress the hash"]),
    ("astronomy", "Why do we see phases of the Moon?", ["Earth's shadow covers part of the Moon",
     "We see different portions of its sunlit half as it orbits", "The Moon changes shape", "Clouds block it"]),
    ("virology", "Why does a new flu vaccine have to be produced almost every year?", ["The virus's surface proteins drift",
     "Old vaccines expire chemically", "People lose their antibodies in a week", "Bacteria change the virus"]),
    ("nutrition", "Which vitamin is made in the skin after exposure to sunlight?", ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"]),
    ("anatomy", "Gas exchange in the lungs takes place in the", ["bronchi", "trachea", "alveoli", "pleura"]),
    ("electrical engineering", "A 12 V battery drives current through 2 ohm and 4 ohm resistors in series. The current is",
     ["1 A", "2 A", "3 A", "6 A"]),
]

STEM_FREE = [
    "Which element is found just above silicon in the periodic table?",
    "Which metal is liquid at room temperature?",
    "What is the atomic number of the element directly to the right of calcium?",
    "Which element in period 3 has the largest atomic radius?",
    "A 250 g aluminium block at 90 C is dropped into 500 g of water at 20 C. What is the final temperature? (c_Al = 900, c_water = 4186 J/kg K)",
    "An elevator of mass 800 kg accelerates upward at 1.5 m/s^2. What is the tension in its cable?",
    "A 3 ohm and a 6 ohm resistor are in parallel across 12 V. What current flows from the source?",
    "How long does light take to travel from the Sun to Earth, given the distance is 1.5 x 10^11 m?",
    "A block slides down a 30 degree incline with coefficient of kinetic friction 0.2. What is its acceleration?",
    "What is the frequency of a photon with energy 3.0 eV?",
    "Why is the sky red at sunset? Explain with Rayleigh scattering.",
    "What is the difference between an exothermic and an endothermic process? Give a lab example of each.",
    "What is the role of ATP synthase in the mitochondrion?",
    "Which hormone regulates blood sugar by promoting uptake of glucose into cells?",
    "Explain how a transistor can act as a switch.",
    "What is Big-O notation, and why is an O(n log n) sort better than O(n^2) for large inputs?",
    "How does public-key encryption let two strangers agree on a secret over an open channel?",
    "What are plate tectonics, and how do they explain the Himalayas?",
]

HUMANITIES_MC = [
    ("high school government and politics", "Which of the following is a power reserved to the states under the US Constitution?",
     ["Declaring war", "Coining money", "Conducting elections", "Making treaties"]),
    ("high school macroeconomics", "Stagflation is a combination of", ["high inflation and high unemployment",
     "low inflation and low unemployment", "deflation and growth", "a trade surplus and high growth"]),
    ("high school microeconomics", "A good whose demand rises when incomes fall is called", ["a normal good",
     "an inferior good", "a luxury good", "a public good"]),
    ("professional psychology", "A therapist who helps a client identify and challenge distorted thoughts is using",
     ["psychoanalysis", "cognitive behavioral therapy", "humanistic therapy", "aversion therapy"]),
    ("high school psychology", "The part of the brain most associated with forming new long-term memories is the",
     ["cerebellum", "hippocampus", "medulla", "occipital lobe"]),
    ("public relations", "A company's first step in handling a product-safety crisis should usually be to",
     ["deny responsibility", "communicate quickly and transparently", "wait for the news cycle to end", "change its logo"]),
    ("security studies", "The concept of 'mutually assured destruction' relied on", ["missile defence shields",
     "second-strike capability on both sides", "disarmament treaties alone", "neutral states"]),
    ("us foreign policy", "The Monroe Doctrine warned European powers against", ["trading with the US",
     "further colonization in the Americas", "joining NATO", "intervening in Asia"]),
    ("human sexuality", "Which hormone is primarily responsible for the development of male secondary sex characteristics?",
     ["Estrogen", "Testosterone", "Oxytocin", "Prolactin"]),
    ("moral disputes", "Which argument is most often used by defenders of animal rights?", ["Animals lack language",
     "The capacity to suffer, not species, is what matters morally", "Humans are at the top of the food chain",
     "Only rational beings have rights"]),
    ("moral scenarios", "In which of these two cases does the narrator do something clearly wrong by ordinary standards? Case 1: I told my friend her haircut looked nice even though I preferred it long. Case 2: I took credit for my coworker's idea in front of our boss.",
     ["Wrong, Wrong", "Wrong, Not wrong", "Not wrong, Wrong", "Not wrong, Not wrong"]),
    ("high school world history", "The Treaty of Tordesillas (1494) divided newly found lands between",
     ["England and France", "Spain and Portugal", "the Netherlands and Spain", "Venice and Genoa"]),
    ("high school us history", "The Dust Bowl of the 1930s was caused mainly by", ["earthquakes",
     "drought combined with poor farming practices", "the collapse of the railroads", "flooding of the Mississippi"]),
    ("high school european history", "This question refers to the following information.\n\"Workers of the world, you have nothing to lose but your chains.\"\nThe document this comes from was written in response to",
     ["feudal obligations", "conditions created by industrial capitalism", "the Thirty Years' War", "the Protestant Reformation"]),
    ("prehistory", "Stonehenge was built mostly during which period?", ["Paleolithic", "Neolithic and early Bronze Age",
     "Iron Age Roman occupation", "Medieval period"]),
    ("professional law", "An employee injured by a coworker's careless driving while making a delivery for their employer sues the employer. The relevant doctrine is",
     ["res ipsa loquitur", "respondeat superior (vicarious liability)", "adverse possession", "double jeopardy"]),
    ("international law", "Which body issues advisory opinions on questions of international law at the request of UN organs?",
     ["The International Criminal Court", "The International Court of Justice", "The World Trade Organization", "Interpol"]),
    ("world religions", "Which festival marks the end of the month of fasting in Islam?", ["Eid al-Fitr", "Diwali", "Passover", "Vesak"]),
    ("world religions", "In Shinto, sacred spirits present in nature are called", ["kami", "devas", "jinn", "loa"]),
    ("philosophy", "The 'veil of ignorance' is a thought experiment by", ["John Rawls", "Robert Nozick", "Karl Marx", "Friedrich Nietzsche"]),
]

HUMANITIES_FREE = [
    "In Greek mythology, who is the goddess of wisdom and what animal is her symbol?",
    "In Norse mythology, what is Yggdrasil?",
    "In Buddhist tradition, what is the Eightfold Path?",
    "What is the Hindu concept of dharma, and how does it differ from karma?",
    "Which Indian emperor converted to Buddhism after the Kalinga war?",
    "What is the significance of the Rosetta Stone?",
    "Who wrote The Prince, and what advice does it give rulers?",
    "What were the main ideas of the Enlightenment?",
    "Is this sentence anachronistic: 'Cleopatra watched the construction of the Great Pyramid of Giza'? Think about the dates.",
    "Does this sentence make historical sense: 'Galileo observed Jupiter's moons through his telescope and emailed the results to Kepler'?",
    "What is the moral of this story: A farmer kept complaining that his neighbour's fields were greener, so he moved to them, only to find the same weeds and the same rain.",
    "A tale: the tortoise lent his shell to the hare to keep warm, and the hare never returned it. Later the hare came to need a favour. What lesson might this fable teach?",
    "What is the difference between a tort and a crime?",
    "Explain the doctrine of precedent (stare decisis).",
    "What did Adam Smith mean by the 'invisible hand'?",
    "What is the difference between fiscal and monetary policy?",
    "Explain Milgram's obedience experiments and their ethical problems.",
    "What is the difference between Baroque and Renaissance music?",
    "Why is Don Quixote considered the first modern novel?",
    "How did the Berlin Conference of 1884-85 shape Africa?",
]

CODING = [
    '''def group_anagrams(words: list[str]) -> list[list[str]]:
    """Group words that are anagrams of each other. Groups keep the words' original
    order and are ordered by their first word's position.
    >>> group_anagrams(["tea", "eat", "tan", "ate", "nat"])
    [['tea', 'eat', 'ate'], ['tan', 'nat']]
    """''',
    '''def valid_sudoku_row(row: list[int]) -> bool:
    """A row of nine cells holds digits 1-9 or 0 for empty. Return True when no
    digit 1-9 appears twice."""''',
    '''def to_snake_case(name: str) -> str:
    """Convert camelCase or PascalCase identifiers to snake_case.
    to_snake_case("parseHTTPResponse") == "parse_http_response"
    """''',
    '''def max_profit(prices):
    """prices[i] is a stock's price on day i. Return the best profit from one buy
    followed by one sell, or 0 if no profit is possible.
    max_profit([7, 1, 5, 3, 6, 4]) -> 5
    """''',
    '''def histogram(text: str) -> str:
    """Return a text histogram of letter frequencies: one line per letter that occurs,
    alphabetical, like "a: ***". Ignore case and non-letters."""''',
    '''def nearest_station(stations: dict[str, tuple[float, float]], here: tuple[float, float]) -> str:
    """Return the name of the station closest to `here` by straight-line distance;
    ties go to the alphabetically first name."""''',
    '''def sum_of_multiples(limit: int, factors: list[int]) -> int:
    """Sum all distinct natural numbers below limit that are multiples of at least one
    of the factors. Factors of 0 are ignored."""''',
    '''def decode_columns(label: str) -> int:
    """Spreadsheet column labels: A -> 1, Z -> 26, AA -> 27. Return the column number."""''',
    '''Fill in the function so the tests pass:

def flatten(nested):
    """Flatten arbitrarily nested lists of integers into one list, left to right."""

assert flatten([1, [2, [3, 4]], 5]) == [1, 2, 3, 4, 5]
assert flatten([]) == []''',
    '''What does this print?

```python
def f(xs=[]):
    xs.append(len(xs))
    return xs
f(); f()
print(f())
```''',
    '''What is the output of the following C program?

```c
#include <stdio.h>
int main(void) {
    int a = 5, b = 2;
    printf("%d %d\\n", a / b, a % b);
    return 0;
}
```''',
    "Write a Python class for a bank account with deposit, withdraw (no overdraft) and a transaction history.",
    "Implement a trie in Python with insert, search and starts_with methods.",
    "Write a Kotlin data class for a book and a function that sorts a list of books by year, then title.",
    "Write a function that validates a credit card number with the Luhn algorithm, in JavaScript.",
    "Write unit tests with pytest for a function slugify(title) that lower-cases and hyphenates titles.",
]

MATH = [
    "Sara has 5 times as many stickers as Leo. After Sara gives Leo 12 stickers, she has 3 times as many as he does. How many stickers did Leo have at first?",
    "A school orders 14 boxes of markers with 24 markers each. 37 markers are broken. The rest are shared equally among 9 classes. How many markers does each class get, and how many are left over?",
    "A phone plan costs $25 a month plus $0.10 per text after the first 200. Last month the bill was $31.40. How many texts were sent?",
    "Each week a gardener plants 3 more trees than the week before, starting with 5. How many trees after 8 weeks?",
    "A cyclist rides 18 km at 12 km/h and returns at 9 km/h. What is her average speed for the whole trip?",
    "Kai saves a quarter of his $1,200 monthly pay and spends a third of the rest on rent. How much is left for everything else?",
    "Find the number of integer solutions of |2x - 3| <= 7.",
    "Let x and y be real numbers with x + y = 10 and xy = 21. Find x^3 + y^3.",
    "How many 5-digit numbers have digits that sum to 9 and no zero digit?",
    "Find the smallest positive integer n such that n! is divisible by 1000.",
    "A fair die is rolled three times. What is the probability that the rolls are strictly increasing?",
    "Compute the sum 1/(1*2) + 1/(2*3) + ... + 1/(99*100).",
    "Find all primes p for which p^2 + 2 is also prime.",
    "If the roots of x^2 - 5x + k = 0 differ by 3, find k.",
    "What is the expected number of coin flips needed to get two heads in a row?",
]

MATH_MC = [
    ("high school statistics", "Which sampling method gives every member of the population an equal chance of selection?",
     ["Convenience sampling", "Simple random sampling", "Voluntary response sampling", "Quota sampling"]),
    ("high school mathematics", "What is the slope of the line through (2, 5) and (6, 13)?", ["1/2", "2", "4", "8"]),
    ("abstract algebra", "Which of these groups is not cyclic?", ["Z_6", "Z_2 x Z_3", "Z_2 x Z_2", "Z_5"]),
    ("college mathematics", "The eigenvalues of [[2, 0], [0, 5]] are", ["2 and 5", "0 and 7", "10 only", "-2 and -5"]),
    ("elementary mathematics", "Round 3,649 to the nearest hundred.", ["3,600", "3,650", "3,700", "4,000"]),
    ("high school mathematics", "How many solutions does sin(x) = 1/2 have on [0, 2*pi)?", ["0", "1", "2", "4"]),
]

REASONING = [
    "The museum reopened on the first Monday of June 2015, which was the 1st. The grand gala was held 19 days later. On what weekday and date was the gala?",
    "My library book was due three weeks after I borrowed it on 28 January 2023. I returned it 4 days late. On which date did I return it?",
    "Three chefs, Noor, Pavel and Quinn, start the shift at the grill, the oven and the salad bar. Every hour two of them rotate: first Noor and Quinn switch stations, then Pavel and Noor, then Quinn and Pavel. Where is Noor working at the end?",
    "A delivery drone leaves its dock, flies 400 m west, 300 m north, 400 m east and then 100 m south. How far and in which direction is it from the dock?",
    "Take 1 step. Take 2 steps. Turn left. Take 3 steps. Turn left. Take 3 steps. Turn left. Take 3 steps. Do you end up where you started?",
    "Today, Hugo went to the museum. Between what times could he have gone? Hugo woke up at 7am. Anna saw him at the cafe from 7am to 10am. Ben saw him walking in the park from 10am to 12pm. The museum was closed after 4pm. Between 12pm and 2pm he was at home. Options: (A) 7am to 10am (B) 2pm to 4pm (C) 10am to 12pm (D) 12pm to 2pm",
    "Question: Amy lies. Brad says Amy tells the truth. Cora says Brad lies. Does Cora tell the truth?",
    "Here is a table of books where the first line is a header: title, pages, year\nA, 320, 1999\nB, 150, 2012\nC, 480, 1987\nD, 210, 2020\nHow many books were published after 1995 and have fewer than 300 pages?",
    "On a branch there are three birds: a robin, a crow and a finch. The crow is to the left of the finch. The robin is the rightmost. Which bird is the leftmost?\nOptions:\n(A) The robin is the leftmost\n(B) The crow is the leftmost\n(C) The finch is the leftmost",
    "Is the argument deductively valid? First, every friend of Ron is a classmate of Sue. Second, Pat is not a classmate of Sue. It follows that Pat is not a friend of Ron.\nOptions: valid, invalid",
    "If no artists are accountants and some accountants are chess players, can we conclude that some chess players are not artists?",
    "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. How much does the ball cost? Explain why the intuitive answer is wrong.",
    "A says 'B is guilty', B says 'C is guilty', C says 'B is lying'. Only one of them tells the truth and only one is guilty. Who is guilty?",
    "Five friends sit at a round table. Raj sits opposite no one because the table has five seats; Lia sits to Raj's left; Moe is not next to Lia. Who could be on Raj's right?",
    "Which word comes next in the pattern: Monday, Wednesday, Saturday, Wednesday, ...?",
    "Among four coins one is counterfeit and lighter. What is the fewest weighings on a balance needed to guarantee finding it?",
    ("follow", "Ten people shake hands with each other once. How many handshakes?", "What if two of them refuse to shake hands with each other?"),
]

EXTRACTION = [
    """Extract the departure city, arrival city, date and flight number from this email and return them as JSON.

Hi Sam, your booking is confirmed: flight LX 1613 from Zurich to Copenhagen on 14 March, departing 07:25. Please check in 2 hours before.""",
    """Here is a list of statements. Tag each with the field it belongs to: Physics, Literature, Economics or Music. Give one tag per line.
1. Sonata form has an exposition, development and recapitulation.
2. The unreliable narrator of Lolita shapes what the reader sees.
3. Inflation erodes the real value of fixed wages.
4. Entropy of an isolated system never decreases.""",
    """From the text below, list every company name and the amount it raised, sorted from largest to smallest.

This week Lumen Bio raised $45M in a Series B, Harbor AI closed a $12M seed round, and Fjord Robotics announced $88M led by Northwind Capital.""",
    """Read the passage and answer only with the requested fields: year founded, founder, headquarters.

Originally a bicycle repair shop opened by Lotte Brenner in 1921, the company moved its headquarters to Graz in 1950 and today builds electric cargo bikes.""",
    """Given the table below, identify the employee with the most overtime hours in March and report their name and hours.

name | Jan | Feb | Mar
Kofi | 12 | 9 | 14
Ines | 4 | 18 | 11
Ravi | 7 | 6 | 21""",
    """Summarize each review in the list with a score from 1 to 5 and return a JSON array of integers in the same order.
a) "Dull plot, wooden acting, but the score was lovely."
b) "Best film I have seen this year, I cried twice."
c) "Fine for a rainy afternoon, forgettable otherwise.\"""",
    """Extract all hashtags and mentioned usernames from these posts, deduplicated.

@nina_k loved the #sunrise hike with @tomasz! #alps #sunrise
Back at work, thanks @nina_k for the photos #mondays""",
    """Parse this log line into timestamp, level, service and message fields:

2025-02-11T08:14:55Z ERROR payments-api Timeout contacting card processor after 3000ms""",
    """From this recipe, list only the cooking times and temperatures, in order.

Preheat the oven to 200 C. Roast the squash for 25 minutes, then lower to 180 C and add the onions for another 15 minutes. Rest 5 minutes before serving.""",
    ("follow", "Extract the product names from: 'We stock the Ember kettle, the Aster toaster and the Nova blender.'", "Return them as a YAML list with a field for the appliance type."),
]

WRITING = [
    "Write a short science-fiction story in which the last human librarian teaches a robot to read poetry.",
    "Write a heartfelt thank-you note to a nurse who cared for my father.",
    "Compose a catchy jingle for a neighbourhood bike repair shop.",
    "Write an essay on whether homework should be banned in primary schools, with arguments on both sides.",
    "Write a press release announcing a community garden opening this spring.",
    "Write a descriptive paragraph about an old train station at dawn.",
    "Write a children's bedtime story about a shy cloud.",
    "Write a LinkedIn post announcing that I'm starting a new job as a product manager.",
    ("follow", "Write a short story about a lost umbrella.", "Now retell it in exactly five sentences."),
    ("follow", "Write an email inviting the team to a Friday lunch.", "Rewrite your previous response as a rhyming poem."),
]

ROLEPLAY = [
    "Imagine you are a 300-year-old oak tree in a city park. A child asks you what the city looked like when you were young.",
    "Pretend to be a stand-up comedian warming up the crowd before a tech conference.",
    "Please take on the role of a relationship counsellor. My partner and I argue about chores every week.",
    "You are a ship's AI on a long voyage to Mars. The crew asks you for a morale boost.",
    "Act as a job interviewer for a barista position and interview me.",
    "Suppose you are a Victorian-era explorer writing to your family from the Amazon. Speak as that person.",
    "Pretend you are Ada Lovelace and tell me about your notes on the Analytical Engine.",
    "Act as a dungeon master and start a fantasy adventure for me.",
    ("follow", "From now on, respond as a grumpy medieval blacksmith.", "Can you fix my sword by tomorrow?"),
]

GENERAL = [
    "yo",
    "Thanks a lot, bye!",
    "What's your favourite colour?",
    "Do you dream?",
    "Can you keep me company for a while?",
    "what are you able to help me with",
    "How do I politely end a long phone call?",
    "What should I get my dad for his 60th birthday?",
]

ITEMS = {
    "stem": [("mc", s, q, o) for s, q, o in STEM_MC] + STEM_FREE,
    "humanities": [("mc", s, q, o) for s, q, o in HUMANITIES_MC] + HUMANITIES_FREE,
    "coding": CODING,
    "math": [("mc", s, q, o) for s, q, o in MATH_MC] + MATH,
    "reasoning": REASONING,
    "extraction": EXTRACTION,
    "writing": WRITING,
    "roleplay": ROLEPLAY,
    "general": GENERAL,
}
