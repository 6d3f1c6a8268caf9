"""NOT SHIPPED: build.py does not read this file (see ../../README.md, "A sixth batch:
measured, not shipped"). To repeat the measurement, move it next to build.py and add it
to build.py's module list and `later` (its own RNG, `random.Random(SEED + 5)`).

A sixth batch, written for this project on 2026-12-02 from two readings: the per-source
totals of the larger public sample, never its prompts (MMLU's stem subjects are the
weakest source there, 0.71, read as humanities 13 times, math 7 and coding 4 of 90), and
the dev-half errors (a bridge in an earthquake zone, social support and health, a child's
behaviour in a clinic read as humanities; physics numbers read as math). So: science and
engineering multiple choice whose wording sounds social or numeric (stem), computer-science
theory and machine learning without runnable code (stem), medicine and aging vignettes about
people (stem), physical geography and engineering decisions (stem), and counterweights that
keep the lines where they were: psychology, economics and sociology with numbers or health
words (humanities), pure mathematics with the same numbers (math). None is copied or
paraphrased from a public benchmark; `check_overlap.py` compares them with every public
source."""

STEM_MC = [
    # physics with numbers: stem, not math
    ("college physics", "A 3 kg cart moving at 4 m/s collides with and sticks to a 1 kg cart at rest. What is their speed just after the collision?",
     ["3 m/s", "4 m/s", "1 m/s", "12 m/s"]),
    ("college physics", "A photon has a wavelength of 500 nm. Roughly what is its energy?",
     ["2.5 eV", "0.25 eV", "25 eV", "250 eV"]),
    ("college physics", "An ideal gas is compressed isothermally to half its volume. Its pressure",
     ["doubles", "halves", "stays the same", "quadruples"]),
    ("high school physics", "A ball is dropped from a 20 m tall tower. Ignoring air resistance, about how long does it take to reach the ground?",
     ["2 s", "1 s", "4 s", "20 s"]),
    ("high school physics", "A 60 W bulb runs for 5 hours. How much energy does it use?",
     ["0.3 kWh", "3 kWh", "12 kWh", "300 kWh"]),
    ("high school physics", "Two resistors of 6 ohms each are connected in parallel. The equivalent resistance is",
     ["3 ohms", "12 ohms", "6 ohms", "36 ohms"]),
    ("conceptual physics", "A heavy truck and a small car collide head-on. During the collision, the force on the car is",
     ["equal in size to the force on the truck", "larger than the force on the truck", "smaller than the force on the truck", "zero"]),
    ("conceptual physics", "Why does a spoon in hot tea feel hot at its handle after a while?",
     ["Heat is conducted along the metal", "Cold flows out of the spoon", "The spoon absorbs light from the tea", "Steam condenses inside the metal"]),
    ("conceptual physics", "An astronaut on the Moon drops a feather and a hammer together. They",
     ["land at the same time", "land with the hammer first", "land with the feather first", "float away"]),
    ("college physics", "A spring with constant 200 N/m is stretched 0.1 m. The stored elastic energy is",
     ["1 J", "10 J", "20 J", "2 J"]),
    # chemistry with numbers
    ("high school chemistry", "How many moles are in 36 g of water (H2O)?", ["2", "1", "0.5", "18"]),
    ("high school chemistry", "A solution has a hydrogen ion concentration of 1 x 10^-3 M. Its pH is",
     ["3", "11", "7", "-3"]),
    ("college chemistry", "Which gas law relates volume and temperature at constant pressure?",
     ["Charles's law", "Boyle's law", "Avogadro's law", "Dalton's law"]),
    ("college chemistry", "What is the oxidation state of manganese in KMnO4?", ["+7", "+2", "+4", "-1"]),
    ("high school chemistry", "Which type of bond holds the two hydrogen atoms together in H2?",
     ["A nonpolar covalent bond", "An ionic bond", "A hydrogen bond", "A metallic bond"]),
    ("college chemistry", "A first-order reaction has a half-life of 10 minutes. What fraction remains after 30 minutes?",
     ["1/8", "1/3", "1/4", "1/6"]),
    # computer science theory, no runnable code
    ("college computer science", "What is the worst-case time complexity of quicksort on n elements?",
     ["O(n^2)", "O(n log n)", "O(n)", "O(log n)"]),
    ("college computer science", "Which data structure gives O(1) average-time lookup by key?",
     ["A hash table", "A sorted linked list", "A binary heap", "A stack"]),
    ("high school computer science", "How many distinct values can be stored in 8 bits?", ["256", "255", "128", "512"]),
    ("high school computer science", "What is the binary representation of the decimal number 13?", ["1101", "1011", "1110", "1001"]),
    ("college computer science", "A deadlock requires all of the following conditions EXCEPT",
     ["preemption of resources", "mutual exclusion", "hold and wait", "circular wait"]),
    ("college computer science", "In a TCP connection, the three-way handshake consists of",
     ["SYN, SYN-ACK, ACK", "ACK, ACK, FIN", "SYN, FIN, RST", "GET, POST, PUT"]),
    ("high school computer science", "Which of these is an example of lossy compression?", ["JPEG", "ZIP", "PNG", "FLAC"]),
    ("college computer science", "A language is accepted by some deterministic finite automaton exactly when it is",
     ["regular", "context-free but not regular", "recursively enumerable", "undecidable"]),
    ("computer security", "A website stores passwords with a unique random value added before hashing. That value is called a",
     ["salt", "nonce key", "cipher", "token"]),
    ("computer security", "An attacker tricks employees with a fake login page sent by email. This is",
     ["phishing", "a buffer overflow", "a denial-of-service attack", "SQL normalization"]),
    ("machine learning", "A model scores 99 % on its training data and 60 % on new data. It is most likely",
     ["overfitting", "underfitting", "well regularized", "using too little data augmentation to matter"]),
    ("machine learning", "Which method reduces the dimensionality of data by finding directions of maximum variance?",
     ["Principal component analysis", "k-nearest neighbours", "Gradient boosting", "Dropout"]),
    ("machine learning", "In k-fold cross-validation with k = 5, each model is trained on what share of the data?",
     ["80 %", "20 %", "50 %", "100 %"]),
    # electrical engineering, astronomy
    ("electrical engineering", "What is the current through a 10 ohm resistor with 5 V across it?", ["0.5 A", "2 A", "50 A", "5 A"]),
    ("electrical engineering", "A transformer has 100 turns on the primary and 500 on the secondary. With 20 V AC in, the output is",
     ["100 V", "4 V", "20 V", "500 V"]),
    ("electrical engineering", "Which component stores energy in an electric field?", ["A capacitor", "An inductor", "A resistor", "A diode"]),
    ("astronomy", "Why does the Moon always show the same face to Earth?",
     ["It is tidally locked, rotating once per orbit", "It does not rotate at all", "Earth's shadow hides the other side", "It orbits faster than it rotates"]),
    ("astronomy", "Which planet has the shortest year?", ["Mercury", "Venus", "Mars", "Neptune"]),
    ("astronomy", "A star's color is mainly an indicator of its", ["surface temperature", "age", "distance from Earth", "number of planets"]),
    # medicine and aging vignettes about people: stem
    ("clinical knowledge", "An elderly man who lives alone is found confused, with dry mouth and low urine output on a hot day. The most likely cause is",
     ["dehydration", "loneliness", "early dementia", "a vitamin C deficiency"]),
    ("professional medicine", "A 45-year-old office worker has crushing chest pain spreading to the left arm for 30 minutes. The first test to order is",
     ["an electrocardiogram", "a colonoscopy", "a skin biopsy", "a hearing test"]),
    ("professional medicine", "A 5-year-old boy at a family visit has a barking cough and a hoarse voice at night. The most likely diagnosis is",
     ["croup", "asthma", "appendicitis", "measles"]),
    ("college medicine", "A student preparing for exams sleeps four hours a night for a week. Which effect on memory is best supported?",
     ["Consolidation of new memories is impaired", "Long-term memory improves", "Working memory capacity doubles", "There is no measurable effect"]),
    ("human aging", "Which change in the eye makes reading small print harder for most people after age 45?",
     ["Presbyopia, the lens losing flexibility", "Colour blindness", "A detached retina", "Night blindness from vitamin A"]),
    ("human aging", "Falls in older adults are most strongly linked to which of these?",
     ["Muscle weakness and balance problems", "High vitamin D levels", "Regular walking", "Low blood sugar after meals only"]),
    ("human aging", "Regular aerobic exercise in older adults has been shown to",
     ["improve cardiovascular fitness and some cognitive functions", "speed up bone loss", "raise resting heart rate", "have no measurable effect after 70"]),
    ("nutrition", "A vegan who takes no supplements is at the greatest risk of a deficiency in",
     ["vitamin B12", "vitamin C", "fibre", "potassium"]),
    ("nutrition", "Which macronutrient is the body's preferred fuel during high-intensity exercise?",
     ["Carbohydrate", "Protein", "Fat", "Alcohol"]),
    ("medical genetics", "Two parents who are both carriers of cystic fibrosis have a child. The chance the child is affected is",
     ["25 %", "50 %", "75 %", "0 %"]),
    ("virology", "Why do doctors not prescribe antibiotics for a viral flu?",
     ["Antibiotics target bacteria, not viruses", "Viruses are too large for antibiotics", "Antibiotics only work in children", "The flu is caused by a fungus"]),
    ("college biology", "Which organelle makes most of a cell's ATP?", ["The mitochondrion", "The ribosome", "The Golgi apparatus", "The lysosome"]),
    ("high school biology", "In a food chain, grass -> rabbit -> fox, the rabbit is a",
     ["primary consumer", "producer", "decomposer", "tertiary consumer"]),
    ("anatomy", "Which part of the brain mainly coordinates balance and fine movement?", ["The cerebellum", "The frontal lobe", "The hypothalamus", "The medulla"]),
]

STEM_OPEN = [
    "A town plans a dam on a river in a region with frequent earthquakes. What engineering factors should the design consider?",
    "How do the Himalayas affect the monsoon rainfall of South Asia?",
    "Explain how a heat pump can move more heat than the electrical energy it uses.",
    "Why does a bridge have expansion joints, and what would happen without them?",
    "How do glaciers shape a valley, and how can you tell a glacial valley from a river valley?",
    "What happens to the body's heart rate and breathing during a panic attack, physiologically?",
    "Why does blood pressure tend to rise with age?",
    "Compare lithium-ion and lead-acid batteries for storing solar power at home.",
    "How does a vaccine train the immune system without causing the disease?",
    "A patient asks why they must finish a course of antibiotics. Explain the biology of resistance.",
]

HUMANITIES_MC = [
    # social science with numbers or health words: humanities
    ("high school macroeconomics", "If nominal GDP grows 6 % and the price level rises 2 %, real GDP grows by about",
     ["4 %", "8 %", "3 %", "12 %"]),
    ("high school microeconomics", "A price rise from $10 to $12 lowers quantity demanded from 100 to 90 units. Demand is",
     ["inelastic", "perfectly elastic", "unit elastic", "elastic"]),
    ("professional psychology", "A therapist helps a client replace the thought 'I always fail' with a more balanced one. This approach is",
     ["cognitive behavioural therapy", "psychoanalysis", "electroconvulsive therapy", "hypnosis"]),
    ("high school psychology", "A child who learns to fear dogs after being bitten shows which type of learning?",
     ["Classical conditioning", "Insight learning", "Latent learning", "Imprinting"]),
    ("sociology", "The gap in life expectancy between rich and poor neighbourhoods is mainly studied as",
     ["a social determinant of health", "a genetic mutation", "a measurement error", "a law of physics"]),
    ("human sexuality", "According to most surveys, which factor do couples name most often as keeping a long relationship satisfying?",
     ["Good communication", "Shared hobbies only", "Living far apart", "Avoiding all conflict"]),
    ("public relations", "After a product recall, a company's first public statement should above all be",
     ["prompt, honest and focused on safety", "delayed until the lawsuit ends", "a denial", "limited to shareholders"]),
    ("professional psychology", "A researcher finds that people who sleep less report more stress. She can conclude that",
     ["the two are associated, but not which causes which", "less sleep causes stress", "stress causes less sleep", "there is no relation"]),
]

MATH_MC = [
    ("high school mathematics", "Solve for x: 3x + 7 = 22.", ["5", "3", "7", "15"]),
    ("college mathematics", "What is the integral of 2x from 0 to 3?", ["9", "6", "3", "18"]),
    ("high school statistics", "A data set has mean 10 and standard deviation 2. What is the z-score of 14?", ["2", "4", "0.5", "1.4"]),
    ("elementary mathematics", "A train travels 180 km in 3 hours. What is its average speed?", ["60 km/h", "540 km/h", "90 km/h", "30 km/h"]),
    ("abstract algebra", "What is the order of the element 3 in the group Z_12 under addition?", ["4", "3", "12", "6"]),
    ("college mathematics", "How many subsets does a set with 5 elements have?", ["32", "25", "10", "120"]),
]

ITEMS = {
    "stem": [("mc", s, q, o) for s, q, o in STEM_MC] + STEM_OPEN,
    "humanities": [("mc", s, q, o) for s, q, o in HUMANITIES_MC],
    "math": [("mc", s, q, o) for s, q, o in MATH_MC],
}
