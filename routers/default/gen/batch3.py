"""A third batch, written for this project after reading the errors of the first
retrained router on the *dev* half of the public eval (never its test half): follow-up
turns that ask for writing but belong to the conversation's topic, code-tracing
questions, docstring functions with mathematical content, date/schedule/table puzzles,
passage-based history and economics multiple choice, religion and mythology questions
with option lists, anachronism checks, physics formula questions, and identity chat."""

FOLLOW_UPS = {
    # the second turn alone reads like writing; the conversation is about the subject
    "humanities": [
        ("What were the main causes of the Thirty Years' War?", "Write a short poem that captures the above."),
        ("Explain the difference between Keynesian and monetarist views of recessions.", "Draft a one-page plan for a government following the second view, with rough costs."),
        ("Summarize Kant's argument for the categorical imperative.", "Now write a dialogue in which a student objects to it."),
        ("How did the Reformation change European politics?", "Give me three examples and expand on the second one."),
        ("What is the role of the Supreme Court in American democracy?", "Write a persuasive paragraph defending your answer."),
        ("Why did the Roman Republic fall?", "Turn that into a lesson plan for 14-year-olds, three 45-minute classes."),
    ],
    "stem": [
        ("How do vaccines produce immunity?", "Design a simple classroom experiment to illustrate the idea."),
        ("Explain how a geothermal power plant works.", "Write a short pitch for building one in Iceland with a budget estimate."),
        ("Why does ice float on water?", "Now explain it as if I were five years old."),
        ("What are the main components of a solar panel system?", "Estimate the cost of a 5 kW installation and list the parts."),
        ("Explain gradient descent in machine learning.", "Give me a concrete numerical example with two steps."),
        ("How do rivers shape the landscape over time?", "Describe three landforms this creates and how to recognise them."),
    ],
    "reasoning": [
        ("Four friends sit in a row: Ava is left of Ben, Cai is right of Ben, and Dov is at the far left. What is the order?", "Now list them from right to left."),
        ("If all wugs are blicks and some blicks are daxes, must some wugs be daxes?", "Give a counterexample to show it."),
        ("A is taller than B, B is taller than C. Is A taller than C?", "What if we only knew that B is not shorter than C?"),
    ],
    "extraction": [
        ("Extract all city names from: 'We drove from Lyon to Geneva, then took the train to Milan and Turin.'", "Now make the output a single line, comma separated, alphabetical."),
        ("From this text return JSON with name and role: 'Ines Ferreira, CTO, and Bo Lind, head of sales, will attend.'", "Shorten every value to its initials."),
        ("Pull the numbers out of: 'Sales were 1,200 in May, 950 in June and 1,430 in July.'", "Please put them in a table with the month in the first column."),
    ],
    "roleplay": [
        ("Pretend you are a park ranger at Yellowstone talking to visitors.", "Is it safe to swim in the hot springs?"),
        ("Act as a personal chef planning my meals this week.", "I forgot to say I'm vegetarian and allergic to nuts."),
        ("Imagine you are a medieval court jester entertaining the king.", "The king looks bored. What do you do now?"),
        ("You are a seasoned sailor telling stories at a harbour tavern.", "Is that story really true?"),
    ],
    "math": [
        ("Find the sum of the first 50 odd numbers.", "Now prove the general formula by induction."),
        ("Solve the system x + 2y = 7, 3x - y = 0.", "Check the answer by substitution and plot both lines mentally."),
    ],
    "coding": [
        ("Write a Python function that merges two sorted lists.", "Add type hints and a docstring with examples."),
        ("Write a shell script that backs up my home folder to /backup.", "Make it keep only the last seven backups."),
    ],
    "writing": [
        ("Write a short story about a robot learning to paint.", "Now give it a title and a one-line blurb."),
    ],
}

CODING = [
    '''```
count = 0
for n in [3, 8, 1, 9]:
    if n > 2:
        count += 1
```
What is the value of count at the end of the program?''',
    '''```
a = [1, 2, 3]
b = a[::-1]
a[0] = 10
```
What is b after line 3 runs?''',
    '''```
total = 1
for k in range(4):
    total *= 2
```
What is the value of total after the loop?''',
    '''```
s = "hello"
t = s.upper()[1:4]
```
What is the value of t at line 3?''',
    '''```
def f(n):
    return n if n < 2 else f(n - 1) + f(n - 2)
print(f(6))
```
What does the program print?''',
    '''```
x = [i % 3 for i in range(7)]
y = x.count(0)
```
What is the value of y?''',
    '''```javascript
let arr = [5, 1, 4];
arr.sort();
console.log(arr.join("-"));
```
What gets printed?''',
    '''What value does `z` hold after this runs?
```
z = 0
while z * z < 50:
    z += 3
```''',
    '''def sum_of_divisors(n: int) -> int:
    """Return the sum of the proper divisors of n (divisors smaller than n).
    >>> sum_of_divisors(28)
    28
    >>> sum_of_divisors(12)
    16
    """''',
    '''def poly_eval(coeffs: list, x: float) -> float:
    """coeffs[i] is the coefficient of x**i. Evaluate the polynomial at x using
    Horner's rule.
    >>> poly_eval([1, 0, 2], 3)
    19
    """''',
    '''def is_perfect_square(n: int) -> bool:
    """Return True if n is the square of an integer, without floating point.
    >>> is_perfect_square(49)
    True
    >>> is_perfect_square(50)
    False
    """''',
    '''def collatz_steps(n: int) -> int:
    """Count the steps the Collatz process (halve if even, 3n + 1 if odd) takes to
    reach 1 from n.
    >>> collatz_steps(6)
    8
    """''',
    '''def mean_and_stdev(values: list[float]) -> tuple[float, float]:
    """Return the mean and population standard deviation of a non-empty list.
    >>> mean_and_stdev([2, 4, 4, 4, 5, 5, 7, 9])
    (5.0, 2.0)
    """''',
    '''def binomial(n: int, k: int) -> int:
    """Return n choose k using only integer arithmetic; 0 when k > n.
    >>> binomial(5, 2)
    10
    """''',
    '''def primes_below(n: int) -> list[int]:
    """Sieve of Eratosthenes: all primes smaller than n.
    >>> primes_below(20)
    [2, 3, 5, 7, 11, 13, 17, 19]
    """''',
    '''def integrate_poly(coeffs: list[float]) -> list[float]:
    """coeffs[i] is the coefficient of x**i. Return the coefficients of the
    antiderivative with constant term 0.
    >>> integrate_poly([3, 2])
    [0, 3.0, 1.0]
    """''',
]

REASONING = [
    "Today is 06/15/1990. What was the date 3 weeks ago in MM/DD/YYYY?\nOptions:\n- 05/25/1990\n- 05/24/1990\n- 06/08/1990\n- 05/26/1990",
    "Kenji was born on 29 February 1996. On which date did he first celebrate a birthday falling on the actual 29th after that?",
    "The meeting is in 36 hours. It is now Tuesday 20:00. When is the meeting?",
    "Today, Farah went to the pharmacy. Between what times could she have gone?\nWe know that:\nFarah woke up at 8am.\nFrom 8am to 10am she was seen jogging.\nFrom 10am to 11am she was seen at the post office.\nFrom 1pm to 4pm she was seen at the library.\nThe pharmacy was closed after 4pm.\nOptions:\n(A) 8am to 10am\n(B) 11am to 1pm\n(C) 1pm to 4pm\n(D) 10am to 11am",
    "Luca can visit the dentist only when he is not at school (8-15), not at football (16-18) and before the clinic closes at 19. Which hour is free?",
    "Here is a table where the first line is a header and each line is a planet in a made-up system:\nname, moons, radius (km), day length (h)\nAra, 2, 5100, 30\nBex, 0, 2300, 12\nCyl, 5, 8800, 19\nDun, 1, 4100, 44\nWhich planet has more than one moon and a day shorter than 24 hours?",
    "Here is a table of runners: name, age, best time (min)\nIvo, 34, 41\nJia, 28, 39\nKofi, 45, 44\nLena, 31, 38\nWe add Mika, 25, 43. How many runners are younger than 32?",
    "Three people each hold a card. Uri has the ace, Vera the king, Wes the queen. First Uri and Wes trade cards, then Vera and Uri trade, then Wes and Vera trade. Who holds the ace at the end?",
    "Options: Yes / No. If you walk 3 steps forward, turn right, walk 3 steps, turn right, walk 3 steps, turn right and walk 3 steps, are you back at the start?",
    "Which statement follows? All members of the choir sing on Sundays. Rafa does not sing on Sundays. (A) Rafa is in the choir (B) Rafa is not in the choir (C) Cannot be determined",
]

HUMANITIES_MC = [
    ("high school european history", "This question refers to the following information.\n\"The guilds forbid any master from employing more than two journeymen, and no goods may be sold in the town that were not made by its own craftsmen.\"\nRegulations like these were most typical of",
     ["medieval town economies", "laissez-faire industrial capitalism", "Soviet planning", "the post-war welfare state"]),
    ("high school us history", "This question refers to the following information.\n\"We ask not for charity but for the ballot, that we may protect our homes and our wages.\"\nThe authors of this petition were most likely campaigning for",
     ["women's suffrage", "the gold standard", "prohibition of alcohol", "westward expansion"]),
    ("high school world history", "This question refers to the following information.\n\"The emperor has ordered that the ships be burned and no more voyages be made beyond the seas.\"\nThis decree is best understood in the context of",
     ["Ming China turning away from overseas expeditions", "the Spanish Armada", "Viking raids on England", "the Opium Wars"]),
    ("high school macroeconomics", "Which of the following is a tool of fiscal policy?", ["Changing the discount rate",
     "Open market operations", "Changing income tax rates", "Changing reserve requirements"]),
    ("high school macroeconomics", "If nominal GDP grew 6 percent and the price level rose 4 percent, real GDP grew about",
     ["2 percent", "4 percent", "10 percent", "24 percent"]),
    ("high school microeconomics", "In the short run, a firm should shut down if price falls below", ["average total cost",
     "average variable cost", "marginal revenue", "average fixed cost"]),
    ("moral scenarios", "In which of these two scenarios does the speaker act in a clearly wrong way? Scenario A: I let my little brother win at chess. Scenario B: I sold my neighbour's bike while he was on holiday.",
     ["Wrong, Wrong", "Wrong, Not wrong", "Not wrong, Wrong", "Not wrong, Not wrong"]),
    ("world religions", "In Jainism, the liberated souls who teach the path are called", ["Bodhisattvas", "Tirthankaras", "Imams", "Rishis"]),
    ("world religions", "In Hinduism, which festival of colours marks the arrival of spring?", ["Holi", "Navaratri", "Onam", "Pongal"]),
    ("mythology", "In Japanese mythology, who is the sun goddess?", ["Izanami", "Amaterasu", "Susanoo", "Inari"]),
    ("mythology", "In Greek mythology, how many labours did Heracles perform?", ["Seven", "Ten", "Twelve", "Fifteen"]),
    ("mythology", "In Egyptian mythology, which god has the head of a jackal?", ["Ra", "Anubis", "Horus", "Thoth"]),
    ("history", "Does the following sentence contain an anachronism? 'Queen Victoria sent a telegram to congratulate the engineers of the Suez Canal.'\nOptions:\n- Yes\n- No",
     ["Yes", "No"]),
    ("history", "Is this sentence anachronistic? 'Genghis Khan's riders carried printed paper maps of Persia.'", ["Yes", "No"]),
    ("literature", "A bee stung the bear that was raiding its hive, and the bear, in fury, smashed the whole tree, and every hive in it, so the bee lost her own home too. What is the moral?",
     ["Revenge can hurt the avenger as much as the enemy", "Slow and steady wins the race", "Honesty is the best policy", "Look before you leap"]),
]

STEM = [
    ("mc", "physics", "Identify the formula most useful for this problem: a 3 kg ball is dropped from a 12 m balcony; find its speed just before landing.",
     ["v^2 = v0^2 + 2 * a * d", "F = q * E", "P = V^2 / R", "p = m * v"]),
    ("mc", "physics", "Which formula would you use: a 1500 W heater runs for 2 hours; how much energy does it use?",
     ["E = P * t", "F = m * a", "V = I * R", "a = v^2 / r"]),
    ("mc", "physics", "Pick the relevant equation: a 0.2 kg puck slides at 5 m/s into a spring of constant 500 N/m; how far does the spring compress?",
     ["(1/2) m v^2 = (1/2) k x^2", "F = G m1 m2 / r^2", "Q = m c dT", "lambda = h / p"]),
    ("mc", "physics", "A 2 kg object on a 1.5 m string swings in a horizontal circle at 4 m/s. Which equation gives the tension's horizontal component?",
     ["F = m v^2 / r", "E = m c^2", "W = F d", "P = F / A"]),
    ("mc", "conceptual physics", "A person standing in an elevator that accelerates upward feels", ["lighter", "heavier", "weightless", "no change"]),
    ("mc", "high school physics", "A 5 kg box is pushed across a floor with 30 N while friction is 10 N. Its acceleration is",
     ["2 m/s^2", "4 m/s^2", "6 m/s^2", "8 m/s^2"]),
    "A boat crosses a 120 m wide river at 4 m/s relative to the water while the current flows at 3 m/s. How long does the crossing take and how far downstream does it land?",
    "What is the momentum of a 0.15 kg baseball thrown at 40 m/s, and what impulse is needed to stop it?",
    "A 2.0 kg mass hangs from a spring and stretches it 8 cm. What is the spring constant, and what would the period of oscillation be?",
    "How much current does a 1.2 kW microwave draw on a 120 V circuit, and what is its resistance?",
    "Which element is just below oxygen in group 16?",
    "What are the three main types of rock, and how does each form?",
]

GENERAL = [
    "introduce yourself please",
    "do you use google's servers?",
    "are you some kind of gpt?",
    "who is your creator, if you don't mind me asking",
    "nice to meet you!",
    "have a great evening",
    "what do people usually ask you?",
    "can I call you Sam?",
]

ITEMS = {
    "coding": CODING,
    "reasoning": REASONING,
    "humanities": [("mc", s, q, o) for s, q, o in HUMANITIES_MC],
    "stem": STEM,
    "general": GENERAL,
}
for _category, _pairs in FOLLOW_UPS.items():
    ITEMS.setdefault(_category, []).extend(("follow", a, b) for a, b in _pairs)
