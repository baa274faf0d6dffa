"""The billing integrations of the operator manual, as its readers would run them.

Each function below is transcribed from the manual's Python examples (sections
4.1.11, 4.2.7, 4.2.8, 4.2.9, 5.2.6, 5.2.7) with only the PDF's OCR damage repaired
(noted where it mattered); the calls to Catena are exactly the manual's.  The
helpers a billing system provides itself (tariff names, its own database) are at
the end.  ``BASH_*`` are the manual's shell examples.  The tests configure
``API_URL``/``API_KEY`` and the billing state, then call these unchanged.
"""
# mypy: ignore-errors

from __future__ import annotations

import csv
import time
from collections import defaultdict
from datetime import datetime

import requests

API_URL = "https://catena.example.com/tv-management/api/v1"
API_KEY = "your-api-key"
CATENA_API_URL = API_URL
CATENA_API_KEY = API_KEY
PACKAGE_PRICES: dict[str, float] = {}

# What the billing system knows; set by the tests.
TARIFFS: dict[str, str] = {}  # tariff name -> package id
BILLING_ACTIVE: list[dict[str, str]] = []  # [{"phone": "+7...", "tariff": "basic"}]
LOG: list[str] = []
FAILED: list[tuple[str, str, str]] = []


def configure(url: str, key: str) -> None:
    global API_URL, API_KEY, CATENA_API_URL, CATENA_API_KEY
    API_URL = CATENA_API_URL = url
    API_KEY = CATENA_API_KEY = key


# --- §4.1.11 "Пример webhook от биллинга" -------------------------------------------


def on_payment_success(subscriber_phone, package_name):
    # 1. Найти абонента по телефону
    subscribers = requests.get(
        f"{CATENA_API_URL}/subscribers",
        headers={"X-Auth-Token": CATENA_API_KEY},
    ).json()
    # OCR lost this line; it picks the subscriber whose full number matches.
    subscriber = next(
        s for s in subscribers["subscribers"] if f"+{s['phoneCountryCode']}{s['phone']}" == subscriber_phone
    )
    # 2. Подключить оплаченный пакет
    requests.post(
        f"{CATENA_API_URL}/packages-subscribers",
        headers={"X-Auth-Token": CATENA_API_KEY},
        json={"subscriberId": subscriber["subscriberId"], "packageId": get_package_id(package_name)},
    )


# --- §4.2.7 Example 1: the billing webhook (the Flask route's body) --------------------


def billing_webhook(data):
    if data["event"] == "payment.success":
        # Получили оплату - активируем подписку
        subscriber_id = get_subscriber_id(data["user_phone"])
        package_id = get_package_id(data["tariff_name"])

        # Создаём подписку в Catena
        response = requests.post(
            f"{CATENA_API_URL}/packages-subscribers",
            headers={"X-Auth-Token": CATENA_API_KEY},
            json={"subscriberId": subscriber_id, "packageId": package_id},
        )
        if response.status_code == 200:
            return {"status": "ok", "message": "Subscription activated"}
        else:
            return {"status": "error", "message": response.text}, 500

    elif data["event"] == "subscription.expired":
        # Подписка истекла - деактивируем
        subscriber_id = get_subscriber_id(data["user_phone"])
        package_id = get_package_id(data["tariff_name"])

        # Удаляем подписку в Catena
        response = requests.delete(
            f"{CATENA_API_URL}/packages-subscribers",
            headers={"X-Auth-Token": CATENA_API_KEY},
            json={"subscriberId": subscriber_id, "packageId": package_id},
        )
        return {"status": "ok", "message": "Subscription deactivated"}

    return {"status": "ok"}


def get_subscriber_id(phone):
    """Получить ID абонента Catena по номеру телефона"""
    response = requests.get(f"{CATENA_API_URL}/subscribers", headers={"X-Auth-Token": CATENA_API_KEY})
    subscribers = response.json()["subscribers"]
    for sub in subscribers:
        full_phone = f"+{sub['phoneCountryCode']}{sub['phone']}"
        if full_phone == phone:
            return sub["subscriberId"]

    # Если абонент не найден - создаём
    return create_subscriber(phone)


# --- §4.2.7 Example 2: periodic synchronisation ----------------------------------------


def sync_subscriptions():
    """Синхронизация подписок между биллингом и Catena"""
    # 1. Получить активные подписки из биллинга
    active_billing_subscriptions = get_active_subscriptions_from_billing()

    # 2. Получить всех абонентов Catena
    response = requests.get(f"{CATENA_API_URL}/subscribers", headers={"X-Auth-Token": CATENA_API_KEY})
    catena_subscribers = response.json()["subscribers"]

    # 3. Сравнить и синхронизировать
    for billing_sub in active_billing_subscriptions:
        phone = billing_sub["phone"]
        package_id = get_package_id(billing_sub["tariff"])

        # Найти абонента в Catena
        catena_sub = find_subscriber_by_phone(catena_subscribers, phone)

        if catena_sub:
            # Проверить, есть ли нужная подписка
            if package_id not in catena_sub["packages"]:
                # Подписки нет - создаём
                create_subscription(catena_sub["subscriberId"], package_id)
                print(f"Activated: {phone} -> {package_id}")
        else:
            # Абонента нет - создаём с подпиской
            create_subscriber_with_package(phone, package_id)
            print(f"Created subscriber: {phone}")

    # 4. Отключить истекшие подписки
    for catena_sub in catena_subscribers:
        phone = f"+{catena_sub['phoneCountryCode']}{catena_sub['phone']}"
        for package_id in catena_sub["packages"]:
            if not has_active_billing_subscription(phone, package_id):
                # В биллинге подписки нет - удаляем из Catena
                delete_subscription(catena_sub["subscriberId"], package_id)
                print(f"Deactivated: {phone} -> {package_id}")


def create_subscription(subscriber_id, package_id):
    requests.post(
        f"{CATENA_API_URL}/packages-subscribers",
        headers={"X-Auth-Token": CATENA_API_KEY},
        json={"subscriberId": subscriber_id, "packageId": package_id},
    )


def delete_subscription(subscriber_id, package_id):
    requests.delete(
        f"{CATENA_API_URL}/packages-subscribers",
        headers={"X-Auth-Token": CATENA_API_KEY},
        json={"subscriberId": subscriber_id, "packageId": package_id},
    )


# --- §4.2.8 "Понижение тарифа" ---------------------------------------------------------


def downgrade_subscription(subscriber_id, from_package, to_package):
    """Понизить тариф абонента"""
    from_package_id = get_package_id(from_package)
    to_package_id = get_package_id(to_package)

    # 1. Отключить премиум пакет
    requests.delete(
        f"{CATENA_API_URL}/packages-subscribers",
        headers={"X-Auth-Token": CATENA_API_KEY},
        json={"subscriberId": subscriber_id, "packageId": from_package_id},
    )

    # 2. Подключить базовый пакет
    requests.post(
        f"{CATENA_API_URL}/packages-subscribers",
        headers={"X-Auth-Token": CATENA_API_KEY},
        json={"subscriberId": subscriber_id, "packageId": to_package_id},
    )

    # 3. Записать в биллинг
    billing_record_downgrade(subscriber_id, from_package, to_package)

    return {"success": True, "new_package": to_package}


# --- §4.2.9 "Обработка ошибок" ---------------------------------------------------------


def safe_create_subscription(subscriber_id, package_id, retry_count=3):
    """Создание подписки с повторными попытками"""
    for attempt in range(retry_count):
        try:
            response = requests.post(
                f"{CATENA_API_URL}/packages-subscribers",
                headers={"X-Auth-Token": CATENA_API_KEY},
                json={"subscriberId": subscriber_id, "packageId": package_id},
                timeout=10,
            )

            if response.status_code == 200:
                return {"success": True}
            elif response.status_code == 409:
                # Подписка уже существует - это ОК
                return {"success": True, "already_exists": True}
            else:
                # Другая ошибка
                error_msg = response.json().get("message", "Unknown error")
                log_error(f"Failed to create subscription: {error_msg}")

        except requests.exceptions.Timeout:
            log_warning(f"Timeout on attempt {attempt + 1}")
            if attempt < retry_count - 1:
                time.sleep(2**attempt)  # Exponential backoff
            continue
        except Exception as e:
            log_error(f"Unexpected error: {e!s}")

    # Все попытки неудачны - сохранить для ручной обработки
    save_failed_operation("create_subscription", subscriber_id, package_id)
    return {"success": False, "error": "Failed after retries"}


# --- §5.2.6 "Подсчёт доходов за период" ------------------------------------------------


def calculate_monthly_revenue(year, month):
    """Рассчитать доход за месяц на основе операций"""
    # Границы месяца
    start_date = f"{year}-{month:02d}-01"
    if month == 12:
        end_date = f"{year + 1}-01-01"
    else:
        end_date = f"{year}-{month + 1:02d}-01"

    # 1. Получить все создания подписок за месяц
    subscriptions = get_operations(
        type="createPackageSubscriber", created_at_gte=start_date, created_at_lt=end_date
    )

    # 2. Получить все удаления подписок
    cancellations = get_operations(
        type="deletePackageSubscriber", created_at_gte=start_date, created_at_lt=end_date
    )

    # 3. Сгруппировать по пакетам
    revenue_by_package = defaultdict(lambda: {"created": 0, "cancelled": 0, "revenue": 0.0})

    # Подсчитать созданные подписки
    for op in subscriptions:
        package_id = op["packageId"]
        price = PACKAGE_PRICES.get(package_id, 0)
        revenue_by_package[package_id]["created"] += 1
        revenue_by_package[package_id]["revenue"] += price

    # Подсчитать отменённые (возвраты)
    for op in cancellations:
        package_id = op["packageId"]
        revenue_by_package[package_id]["cancelled"] += 1

    # 4. Итоговый отчёт
    total_revenue = 0
    report = []

    for package_id, stats in revenue_by_package.items():
        package_name = get_package_name(package_id)
        total_revenue += stats["revenue"]

        report.append(
            {
                "package": package_name,
                "created": stats["created"],
                "cancelled": stats["cancelled"],
                "net_growth": stats["created"] - stats["cancelled"],
                "revenue": stats["revenue"],
            }
        )

    return {
        "total_revenue": total_revenue,
        "packages": sorted(report, key=lambda x: x["revenue"], reverse=True),
    }


def get_operations(**filters):
    """Получить операции с фильтрами и пагинацией"""
    operations = []
    cursor = None

    while True:
        # Построить URL с параметрами
        params = []
        for key, value in filters.items():
            if isinstance(value, list):
                for v in value:
                    params.append(f"{key}={v}")
            else:
                params.append(f"{key}={value}")

        if cursor:
            params.append(f"cursor={cursor}")

        url = f"{API_URL}/operations"
        if params:
            url += "?" + "&".join(params)

        response = requests.get(url, headers={"X-Auth-Token": API_KEY})
        data = response.json()

        operations.extend(data["operations"])
        cursor = data.get("next")

        if not cursor:
            break

    return operations


# --- §5.2.6 "Расчёт пропорциональной оплаты (pro-rata)" --------------------------------


def calculate_prorata_billing(subscriber_id, start_date, end_date):
    """Рассчитать пропорциональную стоимость подписок"""
    # Получить все операции абонента за период
    operations = get_operations(
        subscriberId=subscriber_id, created_at_gte=start_date.isoformat(), created_at_lt=end_date.isoformat()
    )

    # Отфильтровать операции с подписками
    subscriptions = {}  # package_id: (create_date, delete_date or None)

    for op in operations:
        package_id = op["packageId"]
        op_date = datetime.fromisoformat(op["createdAt"].replace("Z", "+00:00"))

        if op["type"] == "createPackageSubscriber":
            if package_id not in subscriptions:
                subscriptions[package_id] = {"created": op_date, "deleted": None}
        elif op["type"] == "deletePackageSubscriber":
            if package_id in subscriptions:
                subscriptions[package_id]["deleted"] = op_date

    # Рассчитать стоимость для каждой подписки
    total_cost = 0.0
    billing_details = []

    for package_id, dates in subscriptions.items():
        created = dates["created"]
        deleted = dates["deleted"] or end_date

        # Количество дней использования
        days_used = (deleted - created).days

        # Стоимость пакета в день
        monthly_price = PACKAGE_PRICES.get(package_id, 0)
        daily_price = monthly_price / 30

        # Пропорциональная стоимость
        cost = daily_price * days_used
        total_cost += cost

        billing_details.append(
            {
                "package_id": package_id,
                "package_name": get_package_name(package_id),
                "created": created.isoformat(),
                "deleted": deleted.isoformat(),
                "days": days_used,
                "monthly_price": monthly_price,
                "cost": round(cost, 2),
            }
        )

    return {
        "subscriber_id": subscriber_id,
        "period": f"{start_date.date()} - {end_date.date()}",
        "total_cost": round(total_cost, 2),
        "items": billing_details,
    }


# --- §5.2.7 "Ежемесячный биллинговый отчёт" --------------------------------------------


def generate_monthly_invoices(year, month, output_csv="invoices.csv", tz=None):
    """Генерация счетов на основе журнала операций"""
    # tz is ours: the manual's naive datetimes cannot be subtracted from the aware
    # createdAt its own calculate_prorata_billing parses, so billing passes UTC.
    start_date = datetime(year, month, 1, tzinfo=tz)
    if month == 12:
        end_date = datetime(year + 1, 1, 1, tzinfo=tz)
    else:
        end_date = datetime(year, month + 1, 1, tzinfo=tz)

    # Получить всех абонентов
    response = requests.get(f"{API_URL}/subscribers", headers={"X-Auth-Token": API_KEY})
    subscribers = response.json()["subscribers"]

    # Для каждого абонента рассчитать стоимость
    invoices = []
    for subscriber in subscribers:
        subscriber_id = subscriber["subscriberId"]

        # Рассчитать pro-rata биллинг
        bill = calculate_prorata_billing(subscriber_id, start_date, end_date)

        if bill["total_cost"] > 0:
            invoices.append(
                {
                    "subscriber_id": subscriber_id,
                    "subscriber_name": subscriber["name"],
                    "phone": f"+{subscriber['phoneCountryCode']}{subscriber['phone']}",
                    "amount": bill["total_cost"],
                    "details": bill["items"],
                }
            )

    # Сохранить в CSV
    with open(output_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["subscriber_id", "subscriber_name", "phone", "amount"])
        writer.writeheader()
        for invoice in invoices:
            writer.writerow(
                {
                    "subscriber_id": invoice["subscriber_id"],
                    "subscriber_name": invoice["subscriber_name"],
                    "phone": invoice["phone"],
                    "amount": f"${invoice['amount']:.2f}",
                }
            )

    total_revenue = sum(inv["amount"] for inv in invoices)

    return {"invoices_count": len(invoices), "total_revenue": total_revenue, "file": output_csv}


# --- §4.1.11 "Массовая миграция абонентов" ---------------------------------------------


def import_subscribers(csv_file):
    with open(csv_file) as f:
        reader = csv.DictReader(f)
        for row in reader:
            # Создать абонента
            response = requests.post(
                f"{API_URL}/subscribers",
                headers={"X-Auth-Token": API_KEY},
                json={"name": row["name"], "phoneCountryCode": row["country_code"], "phone": row["phone"]},
            )
            subscriber_id = response.json()["subscriberId"]

            # Подключить пакеты
            for package_id in row["packages"].split(","):
                requests.post(
                    f"{API_URL}/packages-subscribers",
                    headers={"X-Auth-Token": API_KEY},
                    json={"subscriberId": subscriber_id, "packageId": package_id.strip()},
                )
            print(f"Импортирован: {row['name']} ({subscriber_id})")


# --- What the billing system itself provides ----------------------------------------


def get_package_id(tariff_name):
    """Сопоставить название тарифа с ID пакета"""
    return TARIFFS.get(tariff_name)


def get_package_name(package_id):
    return {v: k for k, v in TARIFFS.items()}.get(package_id, package_id)


def create_subscriber(phone):
    """A new subscriber for a '+<code><number>' phone (Russian numbers here: code 7)."""
    response = requests.post(
        f"{CATENA_API_URL}/subscribers",
        headers={"X-Auth-Token": CATENA_API_KEY},
        json={"name": phone, "phoneCountryCode": phone[1], "phone": phone[2:]},
    )
    return response.json()["subscriberId"]


def create_subscriber_with_package(phone, package_id):
    create_subscription(create_subscriber(phone), package_id)


def get_active_subscriptions_from_billing():
    return BILLING_ACTIVE


def find_subscriber_by_phone(subscribers, phone):
    return next((s for s in subscribers if f"+{s['phoneCountryCode']}{s['phone']}" == phone), None)


def has_active_billing_subscription(phone, package_id):
    return any(b["phone"] == phone and get_package_id(b["tariff"]) == package_id for b in BILLING_ACTIVE)


def billing_record_downgrade(subscriber_id, from_package, to_package):
    LOG.append(f"downgrade {subscriber_id} {from_package}->{to_package}")


def log_error(message):
    LOG.append("error: " + message)


def log_warning(message):
    LOG.append("warning: " + message)


def save_failed_operation(kind, subscriber_id, package_id):
    FAILED.append((kind, subscriber_id, package_id))


# --- The manual's shell examples -------------------------------------------------------

# §4.1.11 "Создание нового абонента с базовым пакетом" (OCR: S( → $(, and the package
# variable, garbled as $subscriber_package-id, is $PACKAGE_ID here).
BASH_NEW_SUBSCRIBER = r"""
# 1. Создаём абонента
RESPONSE=$(curl -s -X POST https://your-catena-domain.com/tv-management/api/v1/subscribers \
-H "X-Auth-Token: your-api-key" \
-H "Content-Type: application/json" \
-d '{
    "name": "Новый абонент",
    "phoneCountryCode": "7",
    "phone": "9161234567"
}')

# 2. Извлекаем ID абонента
SUBSCRIBER_ID=$(echo $RESPONSE | jq -r '.subscriberId')

# 3. Подключаем базовый пакет
curl -X POST https://your-catena-domain.com/tv-management/api/v1/packages-subscribers \
-H "X-Auth-Token: your-api-key" \
-H "Content-Type: application/json" \
-d "{
    \"subscriberId\": \"$SUBSCRIBER_ID\",
    \"packageId\": \"$PACKAGE_ID\"
}"
echo "Абонент создан с ID: $SUBSCRIBER_ID"
"""

# §4.1.11 "Апгрейд абонента на премиум пакет", variant 1: add premium to basic.
BASH_UPGRADE_ADD = r"""
curl -X POST https://your-catena-domain.com/tv-management/api/v1/packages-subscribers \
-H "X-Auth-Token: your-api-key" \
-H "Content-Type: application/json" \
-d '{
   "subscriberId": "sK19SW3AAAE.",
   "packageId": "premium-package-id"
}'
"""

# Variant 2: replace basic with premium.
BASH_UPGRADE_REPLACE = r"""
# Сначала отключаем базовый
curl -X DELETE https://your-catena-domain.com/tv-management/api/v1/packages-subscribers \
-H "X-Auth-Token: your-api-key" \
-H "Content-Type: application/json" \
-d '{
    "subscriberId": "sK19SW3AAAE.",
    "packageId": "basic-package-id"
}'

# Затем подключаем премиум
curl -X POST https://your-catena-domain.com/tv-management/api/v1/packages-subscribers \
-H "X-Auth-Token: your-api-key" \
-H "Content-Type: application/json" \
-d '{
    "subscriberId": "sK19SW3AAAE.",
    "packageId": "premium-package-id"
}'
"""

# §4.1.9 "Удаление абонента".
BASH_DELETE = r"""
curl -X DELETE https://your-catena-domain.com/tv-management/api/v1/subscribers/sK19SW3AAAE. \
-H "X-Auth-Token: your-api-key"
"""
